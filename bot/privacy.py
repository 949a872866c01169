"""Who may read what through the bot: which feeds a person may see (search, latest, previews, personal
watches) and which part of a feed's URL a reply may show. Pure decisions over the rules and over what Slack
says about channels, handed in as values: no Slack client, no store here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from bot.model import AddedFeed, RuleSet

REDACTED = "REDACTED"
PUBLIC, CHANNELS = "public", "channels"
VISIBILITIES = (PUBLIC, CHANNELS)


def redacted_url(url: str) -> str:
    """The URL with its credentials, query values and fragment replaced by REDACTED (query keys kept, so
    the reader still sees which parameter to fill in): a feed URL often carries a token there."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url  # nothing to hide, kept as written
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{pair.partition('=')[0]}={REDACTED}" if pair else pair for pair in parts.query.split("&")
    )
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def exported_feeds(feeds: Iterable[AddedFeed], user: str, admins: Iterable[str]) -> list[AddedFeed]:
    """The feeds as `/feeds export` may show them to `user`: whole for an admin and for whoever added the
    feed (they typed the URL); redacted for everyone else. Without admins configured anyone may run export
    anywhere, so then only the person who added a feed sees its whole URL."""
    if user in set(admins):
        return list(feeds)
    return [
        feed
        if feed.added_by == user
        else AddedFeed(feed.id, redacted_url(feed.url), feed.added_by, feed.added_at, feed.title)
        for feed in feeds
    ]


def is_direct(channel: str) -> bool:
    """A direct message with the app, where a personal watch lives (never a channel that 'follows')."""
    return channel.startswith("D")


def followers(rules: RuleSet) -> dict[str, frozenset[str]]:
    """Each `channels` feed's followers: channels with an entry of rules.yaml, or a subscription added
    from Slack, that applies to it (one pass over the rules). A personal watch follows nothing: a DM is
    not a channel others can join. A Slack subscription counts only when it names the feed
    (`feed:<id>`): one for every feed would otherwise open every feed to anyone able to subscribe in a
    public channel."""
    every: set[str] = set()
    named: dict[str, set[str]] = {}
    for rule in rules.channels:
        if is_direct(rule.channel) or (rule.subscription is not None and rule.feeds is None):
            continue
        if rule.feeds is None:
            every.add(rule.channel)
        else:
            for feed_id in rule.feeds:
                named.setdefault(feed_id, set()).add(rule.channel)
    return {
        feed.id: frozenset(every | named.get(feed.id, set()))
        for feed in rules.feeds
        if feed.visibility != PUBLIC
    }


def visible_feeds(
    rules: RuleSet,
    user: str,
    following: dict[str, frozenset[str]],
    *,
    public_channels: frozenset[str],
    member_of: frozenset[str],
) -> frozenset[str]:
    """The feeds `user` may read: `visibility: public` ones, those a public channel follows (anyone may
    join it), those a channel they are a member of follows, and one they added from Slack themselves (so
    they can subscribe a channel to it). `following` is followers(rules)."""
    reachable = public_channels | member_of
    return frozenset(
        feed.id
        for feed in rules.feeds
        if feed.id not in following
        or (feed.added is not None and feed.added.added_by == user)
        or following[feed.id] & reachable
    )


def feeds_for_channel(
    rules: RuleSet, channel: str, following: dict[str, frozenset[str]], *, public_channels: frozenset[str]
) -> frozenset[str]:
    """The feeds a channel's subscription for every feed may carry: those anyone may read (public, or
    followed by a public channel) and those the channel follows itself. Else `subscribe x` in a public
    channel would post a private channel's feed there. `following` is followers(rules)."""
    return frozenset(
        feed.id
        for feed in rules.feeds
        if feed.id not in following or channel in following[feed.id] or following[feed.id] & public_channels
    )


class Readers(Protocol):
    """Who may read which feed, with Slack's answers (bot.membership.ChannelDirectory)."""

    def visible_feeds(self, rules: RuleSet, user: str) -> frozenset[str]: ...

    def channel_feeds(self, rules: RuleSet, channel: str) -> frozenset[str]: ...


def narrow_subscriptions(rules: RuleSet, readers: Readers) -> RuleSet:
    """Subscriptions added from Slack limited to the feeds they may carry: a personal watch (in a DM), on
    every feed or on `feed:<id>`, to the feeds its owner may read; a channel's subscription for every feed
    to feeds_for_channel. Slack is asked once per owner and per channel; rules.yaml entries stay as the
    operator wrote them."""
    every_feed = tuple(feed.id for feed in rules.feeds)
    allowed: dict[str, frozenset[str]] = {}
    channels = []
    for rule in rules.channels:
        sub = rule.subscription
        if sub is not None and is_direct(rule.channel):
            key = sub.added_by
            if key not in allowed:
                allowed[key] = readers.visible_feeds(rules, key)
        elif sub is not None and rule.feeds is None:
            key = rule.channel
            if key not in allowed:
                allowed[key] = readers.channel_feeds(rules, key)
        else:
            channels.append(rule)
            continue
        wanted = every_feed if rule.feeds is None else rule.feeds
        kept = tuple(feed for feed in wanted if feed in allowed[key])
        channels.append(rule if kept == wanted else replace(rule, feeds=kept))
    return replace(rules, channels=tuple(channels))
