"""Who may read what through the bot: which feeds a person may see (search, latest, previews, personal
watches) and which part of a feed's URL a reply may show. Pure decisions over the rules and over what Slack
says about channels, handed in as values: no Slack client, no store here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from bot.model import AddedFeed, RuleSet

REDACTED = "REDACTED"
PUBLIC, CHANNELS = "public", "channels"
VISIBILITIES = (PUBLIC, CHANNELS)


def redacted_url(url: str) -> str:
    """The URL with its credentials, query values and fragment replaced by REDACTED (query keys kept, so
    the reader still sees which parameter to fill in): a feed URL often carries a token there."""
    parts = urlsplit(url)
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


def narrow_personal_watches(rules: RuleSet, readable: Callable[[str], frozenset[str]]) -> RuleSet:
    """Each personal watch (a subscription added in a DM) limited to the feeds its owner may read, so
    that a watch on every feed, or on `feed:<id>`, never delivers a private channel's feed to someone
    outside it. `readable(user)` is asked once per owner."""
    every_feed = tuple(feed.id for feed in rules.feeds)
    allowed_for: dict[str, frozenset[str]] = {}
    channels = []
    for rule in rules.channels:
        owner = rule.subscription.added_by if rule.subscription is not None else None
        if owner is None or not is_direct(rule.channel):
            channels.append(rule)
            continue
        if owner not in allowed_for:
            allowed_for[owner] = readable(owner)
        wanted = every_feed if rule.feeds is None else rule.feeds
        kept = tuple(feed for feed in wanted if feed in allowed_for[owner])
        channels.append(rule if kept == wanted else replace(rule, feeds=kept))
    return replace(rules, channels=tuple(channels))
