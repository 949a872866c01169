"""Runs slash commands against the bot's state: subscriptions and pauses in the store, the archive, the
rules. No Slack client here: what needs Slack (opening a DM, joining a channel) comes in as callables, so
the whole command set is tested without sockets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.blocks import escape_mrkdwn, slack_date
from bot.commands import (
    SEARCH_LIMIT,
    SUBSCRIBE_PREVIEW,
    SUBSCRIBE_PREVIEW_SCAN,
    Command,
    CommandError,
    Reply,
    added_feed_reply,
    explain_text,
    export_reply,
    feed_id_from_url,
    feed_origin,
    help_reply,
    items_reply,
    latest_matches,
    list_reply,
    newest_unique,
    oncall_reply,
    parse_command,
    parse_count,
    parse_pause,
    removed_feed_reply,
    search_archive,
    subscribed_reply,
    text_reply,
)
from bot.errors import FeedError, FetchError, shown_failure
from bot.limits import MAX_CHANNEL_SUBSCRIPTIONS, MAX_USER_SUBSCRIPTIONS, term_length_problem
from bot.model import AddedFeed, ChannelRule, FeedConfig, ParsedFeed, RuleSet, Subscription
from bot.privacy import REDACTED, Readers, exported_feeds, narrow_subscriptions
from bot.query import ItemText, QuerySyntaxError, evaluate, parse_query
from bot.rules import compile_keyword
from bot.store import ArchivedItem, Store

log = logging.getLogger(__name__)


def term_key(term: str) -> str:
    """What makes two spellings one term ("Huawei", "huawei", '"Huawei"'); a query is its own text."""
    try:
        return compile_keyword(term).text.casefold()
    except ValueError:
        return " ".join(term.split()).casefold()


def merge_rules(
    file_rules: RuleSet,
    subscriptions: Sequence[Subscription],
    added_feeds: Sequence[AddedFeed] = (),
    readers: Readers | None = None,
) -> RuleSet:
    """The rules the pipeline runs: the file's feeds, then the feeds added from Slack (polled at the
    default interval); the file's entries, then one entry per term added from Slack. The file wins an id
    that both have; a term for a feed neither has is left out. Both are logged, not errors. With
    `readers` (Slack's word on who may read what), the Slack-added terms are limited to the feeds they
    may carry (bot.privacy.narrow_subscriptions)."""
    feeds = list(file_rules.feeds)
    file_ids = {feed.id for feed in file_rules.feeds}
    for added in added_feeds:
        if added.id in file_ids:
            log.warning(
                "feed added from Slack skipped feed=%s (rules.yaml has a feed with this id, which wins)",
                added.id,
            )
            continue
        feeds.append(FeedConfig(added.id, added.url, file_rules.settings.interval_seconds, added=added))
    known = {feed.id for feed in feeds}
    added_rules = []
    for sub in subscriptions:
        over_limit = subscription_problem(sub)
        if over_limit:
            # Stored before the limits were: kept (so it can be removed), never matched.
            shown = sub.term[:40] + ("…" if len(sub.term) > 40 else "")
            how = f"query:{shown}" if sub.is_query else (f'"{shown}"' if " " in shown else shown)
            log.warning(
                "subscription skipped channel=%s (%s); remove it with `/feeds unsubscribe %s` (the whole "
                "term) in that channel, or `/feeds unsubscribe all` there",
                sub.channel,
                over_limit,
                how,
            )
            continue
        if sub.feed is not None and sub.feed not in known:
            log.warning(
                "subscription skipped channel=%s term=%s feed=%s (no such feed in the rules)",
                sub.channel,
                sub.term,
                sub.feed,
            )
            continue
        added_rules.append(
            ChannelRule(
                channel=sub.channel,
                keywords=() if sub.is_query else (sub.term,),
                feeds=(sub.feed,) if sub.feed else None,
                subscription=sub,
                query=sub.term if sub.is_query else None,
            )
        )
    merged = replace(file_rules, feeds=tuple(feeds), channels=file_rules.channels + tuple(added_rules))
    return merged if readers is None else narrow_subscriptions(merged, readers)


def subscription_problem(sub: Subscription) -> str | None:
    """Why a stored subscription is over a limit of bot.limits, or None."""
    if not sub.is_query:
        return term_length_problem(sub.term)
    try:
        parse_query(sub.term)
    except QuerySyntaxError as e:
        return e.message
    return None


@dataclass(frozen=True)
class Invocation:
    """Who ran the command, where, with what."""

    text: str
    channel: str
    user: str
    command: str = "/feeds"
    channel_name: str = ""

    @property
    def in_dm(self) -> bool:
        return self.channel.startswith("D") or self.channel_name == "directmessage"


def fetch_nothing(feed: FeedConfig) -> ParsedFeed:
    raise FetchError("this bot cannot fetch feeds for commands")


MAX_ADDED_FEEDS = 100  # feeds added from Slack, all together; rules.yaml has no such bound


class CommandService:
    def __init__(
        self,
        *,
        store: Store,
        rules: Callable[[], RuleSet],  # the effective rules (file + Slack), current at call time
        on_rules_changed: Callable[[], None],
        on_resume: Callable[[], None] = lambda: None,
        open_dm: Callable[[str], str] = lambda user: user,
        check_membership: Callable[[str], str | None] = lambda channel: None,
        now: Callable[[], datetime],
        command: str = "/feeds",
        # A feed added from Slack, fetched and parsed once before it is accepted (FetchError, FeedError).
        try_feed: Callable[[FeedConfig], ParsedFeed] = fetch_nothing,
        # A feed was added or removed: the rules take it in, and its poll job is added or dropped.
        on_feeds_changed: Callable[[], None] | None = None,
        # The feeds a user may read (bot.privacy); None: no Slack to ask, every feed (tests, console).
        visible_feeds: Callable[[str], frozenset[str] | None] = lambda user: None,
    ) -> None:
        self.command = command
        self.store = store
        self.rules = rules
        self.on_rules_changed = on_rules_changed
        self.on_resume = on_resume
        self.open_dm = open_dm
        self.check_membership = check_membership
        self.now = now
        self.try_feed = try_feed
        self.on_feeds_changed = on_feeds_changed or on_rules_changed
        # Counting subscriptions and adding them is one step, so two commands at once cannot both pass
        # the limits on the last free place.
        self._subscribing = threading.Lock()
        self.visible_feeds = visible_feeds
        # add-feed holds a slot (and its id) from before its fetch until it is stored or refused, so that
        # concurrent add-feeds cannot pass the cap together.
        self._feed_slots = threading.Lock()
        self._reserved: dict[str, str] = {}  # feed id -> URL

    def handle(self, call: Invocation) -> Reply:
        try:
            command = parse_command(call.text)
            return self._run(command, call)
        except CommandError as e:
            return text_reply(str(e))

    # -- helpers -----------------------------------------------------------------------------------

    def target(self, call: Invocation) -> str:
        """The channel a command manages: this channel, or in a DM the user's own DM with the app."""
        return self.open_dm(call.user) if call.in_dm else call.channel

    def label(self, call: Invocation) -> str:
        return "Your personal watch" if call.in_dm else f"<#{call.channel}>"

    def channel_rules(self, channel: str) -> list[ChannelRule]:
        return [rule for rule in self.rules().channels if rule.channel == channel]

    def refusal(self, call: Invocation) -> Reply | None:
        admins = self.rules().settings.admins
        if not admins or call.in_dm or call.user in admins:
            return None
        names = ", ".join(f"<@{admin}>" for admin in admins)
        return text_reply(
            f"Only admins can change this channel's alerts: {names}. Ask one of them, or keep a personal "
            "watch in a direct message with the app."
        )

    def feed_refusal(self, call: Invocation) -> Reply | None:
        """Feeds are the whole bot's, so a direct message is no exception here."""
        admins = self.rules().settings.admins
        if not admins or call.user in admins:
            return None
        names = ", ".join(f"<@{admin}>" for admin in admins)
        return text_reply(f"Only admins can add or remove feeds: {names}. Ask one of them.")

    def feed_titles(self) -> dict[str, str]:
        return {feed.id: feed.id for feed in self.rules().feeds}

    def check_feed(self, feed: str | None, call: Invocation | None = None) -> None:
        """Refuses a feed that does not exist, or that the caller may not read (said the same way, so
        that its existence is not told either)."""
        visible = self.readable(call) if call is not None else None
        if feed is not None and (
            feed not in self.feed_titles() or (visible is not None and feed not in visible)
        ):
            raise CommandError(self.no_such_feed(feed, visible))

    def no_such_feed(self, feed: str, visible: frozenset[str] | None = None) -> str:
        known = ", ".join(f"`{f}`" for f in self.feed_titles() if visible is None or f in visible) or "none"
        return f"There is no feed `{escape_mrkdwn(feed)}`. Feeds: {known}."

    def readable(self, call: Invocation) -> frozenset[str] | None:
        """The feeds whose items this caller may read (None: every feed)."""
        return self.visible_feeds(call.user)

    def readable_feeds(self, call: Invocation) -> list[FeedConfig]:
        """The feeds in force that this caller may read (`list` names no other)."""
        visible = self.readable(call)
        return [feed for feed in self.rules().feeds if visible is None or feed.id in visible]

    def readable_archive(self, call: Invocation, since: datetime | None = None) -> list[ArchivedItem]:
        visible = self.readable(call)
        entries = self.store.archived(since)
        return entries if visible is None else [e for e in entries if e.item.feed_id in visible]

    # -- verbs -------------------------------------------------------------------------------------

    def _run(self, command: Command, call: Invocation) -> Reply:
        verb = command.verb
        if verb == "help":
            return help_reply(call.command, command.unknown)
        if verb in ("subscribe", "unsubscribe", "pause", "resume"):
            refused = self.refusal(call)
            if refused:
                return refused
        if verb in ("add-feed", "remove-feed"):
            refused = self.feed_refusal(call)
            if refused:
                return refused
        handler: Callable[[Command, Invocation], Reply] = getattr(self, "_" + verb.replace("-", "_"))
        return handler(command, call)

    def _subscribe(self, command: Command, call: Invocation) -> Reply:
        if not command.terms and not command.query:
            return text_reply(f'Subscribe to what? Like `{call.command} subscribe Huawei "scaling law"`.')
        self.check_feed(command.feed, call)
        channel = self.target(call)
        now = self.now()
        if command.query:
            wanted = [Subscription(channel, command.query, None, call.user, now, is_query=True)]
        else:
            wanted = [Subscription(channel, term, command.feed, call.user, now) for term in command.terms]
        with self._subscribing:
            over = self.over_subscription_limits(wanted, call)
            if over:
                return text_reply(over)
            added = self.store.add_subscriptions(wanted)
        if added:
            # Before the reply: a poll that starts once the command is answered matches with the terms.
            self.on_rules_changed()
        already = [s.term for s in wanted if s.id not in {a.id for a in added}]
        lines = []
        if added:
            terms = ", ".join(f"`{'query: ' if s.is_query else ''}{escape_mrkdwn(s.term)}`" for s in added)
            where = "every feed" if command.feed is None else f"feed `{command.feed}`"
            lines.append(
                f"{self.label(call)} now gets alerts for {terms} ({where}), from the next new item on."
            )
        if already:
            lines.append("Already subscribed: " + ", ".join(f"`{escape_mrkdwn(t)}`" for t in already) + ".")
        every_term = dict.fromkeys(
            term
            for rule in self.channel_rules(channel)
            for term in (*rule.keywords, *([f"query: {rule.query}"] if rule.query else []))
        )
        lines.append("All topics here: " + ", ".join(f"`{escape_mrkdwn(t)}`" for t in every_term) + ".")
        warning = None if call.in_dm else self.check_membership(channel)
        if warning:
            lines.append("⚠️ " + warning)
        # The preview looks at the newest archived items only: the subscription is stored and in force before
        # the reply (a poll after the acknowledgement matches with it), so the reply's cost must stay small.
        readable = self.readable_archive(call)[:SUBSCRIBE_PREVIEW_SCAN]
        if command.query:
            query = parse_query(command.query)
            recent = newest_unique(e for e in readable if evaluate(query, ItemText(e.item)))
        else:
            recent = search_archive(readable, command.terms, feed=command.feed)
        return subscribed_reply(lines, recent[:SUBSCRIBE_PREVIEW], self.feed_titles())

    def over_subscription_limits(self, wanted: Sequence[Subscription], call: Invocation) -> str | None:
        """The refusal naming the limit that adding `wanted` would pass, or None."""
        everyone = self.store.subscriptions()
        ids = {sub.id for sub in everyone}
        new = list({sub.id: sub for sub in wanted if sub.id not in ids}.values())
        here = sum(1 for sub in everyone if sub.channel == new[0].channel) if new else 0
        if new and here + len(new) > MAX_CHANNEL_SUBSCRIPTIONS:
            return (
                f"{self.label(call)} has {here} subscriptions added from Slack; "
                f"{MAX_CHANNEL_SUBSCRIPTIONS} is the most a channel takes. Remove some with "
                f"`{call.command} unsubscribe …` (`{call.command} list` shows them), or ask the operator to "
                "put them in rules.yaml. Nothing was changed."
            )
        mine = sum(1 for sub in everyone if sub.added_by == call.user)
        if new and mine + len(new) > MAX_USER_SUBSCRIPTIONS:
            return (
                f"You have added {mine} subscriptions (in every channel and your personal watch); "
                f"{MAX_USER_SUBSCRIPTIONS} is the most one person may add. Remove some with "
                f"`{call.command} unsubscribe …`. Nothing was changed."
            )
        return None

    def _unsubscribe(self, command: Command, call: Invocation) -> Reply:
        channel = self.target(call)
        if not command.terms and not command.query:
            return text_reply(f"Unsubscribe from what? Like `{call.command} unsubscribe Huawei` or `… all`.")
        ours = self.store.subscriptions(channel)
        every = len(command.terms) == 1 and command.terms[0].lower() == "all"
        if command.query:
            removed = [s for s in ours if s.is_query and s.term.casefold() == command.query.casefold()]
        elif every:
            removed = ours
        else:
            keys = {term_key(t) for t in command.terms}
            removed = [
                s
                for s in ours
                if term_key(s.term) in keys and (command.feed is None or s.feed == command.feed)
            ]
        self.store.remove_subscriptions(removed)
        if removed:
            self.on_rules_changed()
        lines = []
        if removed:
            lines.append("Removed: " + ", ".join(f"`{escape_mrkdwn(s.term)}`" for s in removed) + ".")
        managed = [
            (term, rule)
            for rule in self.channel_rules(channel)
            if rule.subscription is None
            for term in rule.keywords
            if every or term_key(term) in {term_key(t) for t in command.terms}
        ]
        if managed:
            terms = ", ".join(
                f"`{escape_mrkdwn(t)}` (line {r.location.line})" if r.location else f"`{escape_mrkdwn(t)}`"
                for t, r in managed
            )
            lines.append(f"Managed in rules.yaml, so not removable from Slack: {terms}.")
        if not lines:
            lines.append(
                "Nothing to remove: no such subscription here. `" + call.command + " list` shows them."
            )
        return text_reply("\n".join(lines))

    def _list(self, command: Command, call: Invocation) -> Reply:
        channel = self.target(call)
        pause = self.store.pause_of(channel, self.now())
        return list_reply(
            self.label(call),
            self.channel_rules(channel),
            pause.until if pause else None,
            call.command,
            feeds=self.readable_feeds(call),
        )

    def _search(self, command: Command, call: Invocation) -> Reply:
        if not command.terms:
            return text_reply(f"Search for what? Like `{call.command} search nexperia days:30`.")
        self.check_feed(command.feed, call)
        # Without days: the whole archive, i.e. every item polled within the retention, however old its
        # publication date; with days:N, items published (else first seen) in the last N days.
        days = command.days or max(1, self.rules().settings.retention_seconds // 86400)
        since = self.now() - timedelta(days=command.days) if command.days else None
        found = search_archive(self.readable_archive(call, since), command.terms, feed=command.feed)
        terms = " ".join(f'"{t}"' if " " in t else t for t in command.terms)
        period = "day" if days == 1 else f"{days} days"
        scope = f"in the last {period}" if command.days else f"among the items seen in the last {period}"
        return items_reply(
            f"Newest items matching {escape_mrkdwn(terms)} ({scope}):",
            found[:SEARCH_LIMIT],
            self.feed_titles(),
            empty=f"Nothing found for {escape_mrkdwn(terms)} {scope}.",
        )

    def _latest(self, command: Command, call: Invocation) -> Reply:
        count = parse_count(" ".join(command.terms))
        self.check_feed(command.feed, call)
        rules = self.channel_rules(self.target(call))
        if not rules:
            return text_reply(
                f"{self.label(call)} has no subscriptions yet: try `{call.command} subscribe …`."
            )
        entries = [e for e in self.readable_archive(call) if command.feed in (None, e.item.feed_id)]
        found = latest_matches(entries, rules)
        return items_reply(
            f"Newest items for {self.label(call)}:",
            found[:count],
            self.feed_titles(),
            empty="No archived item matches this channel's subscriptions yet.",
        )

    def _test(self, command: Command, call: Invocation) -> Reply:
        return explain_text(command.text, self.channel_rules(self.target(call)), call.command)

    def _pause(self, command: Command, call: Invocation) -> Reply:
        until = parse_pause(command.text, self.now())
        self.store.pause(self.target(call), until, call.user)
        return text_reply(
            f"⏸ Alerts for {self.label(call)} are held until {slack_date(until)}. They are delivered then, "
            f"or at once with `{call.command} resume`."
        )

    def _resume(self, command: Command, call: Invocation) -> Reply:
        channel = self.target(call)
        was_paused = self.store.pause_of(channel, self.now()) is not None
        held = self.store.resume(channel)
        if held:
            self.on_resume()
        if not was_paused and not held:
            return text_reply(f"{self.label(call)} was not paused.")
        if not held:
            return text_reply(f"▶️ Resumed {self.label(call)}; nothing was held.")
        return text_reply(f"▶️ Resumed. {held} held alert{'s' if held != 1 else ''} on the way.")

    def mute(self, channel: str, user: str, terms: Sequence[str], feed: str | None = None) -> Reply:
        """The alert's "Mute this topic here" button: removes the Slack-added terms that matched it (from
        the alert's feed: a term kept for another feed only is not the one that matched)."""
        call = Invocation(text="", channel=channel, user=user)
        refused = self.refusal(call)
        if refused:
            return refused
        if not terms:
            return text_reply("This alert names no topic to mute.")
        wanted = {term_key(t) for t in terms}
        removed = [
            s
            for s in self.store.subscriptions(channel)
            if term_key(s.term) in wanted and (s.feed is None or feed in (None, s.feed))
        ]
        self.store.remove_subscriptions(removed)
        if removed:
            self.on_rules_changed()
        managed = [
            f"`{escape_mrkdwn(term)}` (rules.yaml line {rule.location.line})"
            if rule.location
            else f"`{term}`"
            for rule in self.channel_rules(channel)
            if rule.subscription is None
            for term in rule.keywords
            if term_key(term) in wanted
        ]
        lines = []
        if removed:
            names = ", ".join(f"`{escape_mrkdwn(s.term)}`" for s in removed)
            lines.append(f"🔕 Muted {names} here (<@{user}>). `{self.command} subscribe` brings it back.")
        if managed:
            lines.append(
                ("Still alerting: " if removed else "Nothing muted: ")
                + ", ".join(managed)
                + " from rules.yaml; ask its owner to change it there."
            )
        if not lines:
            lines.append("Nothing to mute: that topic is no longer subscribed here.")
        return text_reply("\n".join(lines))

    def _oncall(self, command: Command, call: Invocation) -> Reply:
        channel = self.target(call)
        return oncall_reply(self.label(call), self.store.open_alerts(channel), self.now())

    def _export(self, command: Command, call: Invocation) -> Reply:
        channel = self.target(call)
        name = call.channel_name if call.channel_name not in ("", "directmessage", "privategroup") else ""
        comment = f"#{name}" if name else ("your personal watch" if call.in_dm else channel)
        # Only the feeds in force: one that rules.yaml now has under its id is the file's already.
        in_force = [feed.added for feed in self.rules().feeds if feed.added is not None]
        shown = exported_feeds(in_force, call.user, self.rules().settings.admins)
        redacted = [feed.id for feed, whole in zip(shown, in_force, strict=True) if feed.url != whole.url]
        # Query values and credentials often hold a token: only an admin, or who added the feed, sees them.
        note = (
            f"Parts of the URL of {', '.join(f'`{f}`' for f in redacted)} are shown as {REDACTED}: an admin, "
            "or whoever added the feed, gets the whole URL from this command."
            if redacted
            else None
        )
        return export_reply(
            channel,
            self.label(call),
            comment,
            self.store.subscriptions(channel),
            call.command,
            feeds=shown,
            note=note,
        )

    def _add_feed(self, command: Command, call: Invocation) -> Reply:
        if command.url is None:
            return text_reply(
                f"Add which feed? Like `{call.command} add-feed https://example.com/feed.xml id:example`."
            )
        rules = self.rules()
        with self._feed_slots:
            refused = self.add_feed_refusal(command, call, rules)
            if refused is not None:
                return refused
            taken = {feed.id for feed in rules.feeds} | {f.id for f in self.store.added_feeds()}
            feed_id = command.feed or feed_id_from_url(command.url, taken | set(self._reserved))
            # The slot is held through the fetch (seconds, for a slow host) and given back below.
            self._reserved[feed_id] = command.url
        try:
            return self.fetch_and_add(command.url, feed_id, call, rules)
        finally:
            with self._feed_slots:
                del self._reserved[feed_id]

    def add_feed_refusal(self, command: Command, call: Invocation, rules: RuleSet) -> Reply | None:
        """Why this feed cannot be added, counting the add-feeds still fetching (under _feed_slots)."""
        added = self.store.added_feeds()
        if len(added) + len(self._reserved) >= MAX_ADDED_FEEDS:
            # Without settings.admins anyone may add feeds: each is polled for ever, so there is a bound.
            return text_reply(
                f"There are already {MAX_ADDED_FEEDS} feeds added from Slack, the most the bot takes. "
                f"Remove one with `{call.command} remove-feed <id>`, or ask the operator to put it in "
                "rules.yaml."
            )
        same_url = next((feed for feed in rules.feeds if feed.url == command.url), None)
        if same_url is not None:
            return text_reply(f"That feed is already polled, as `{same_url.id}` ({feed_origin(same_url)}).")
        if command.url in self._reserved.values():
            return text_reply("That feed is being added right now by someone else.")
        taken = {feed.id for feed in rules.feeds} | {feed.id for feed in added} | set(self._reserved)
        if command.feed is not None and command.feed in taken:
            existing = rules.feed(command.feed)
            origin = f" ({feed_origin(existing)})" if existing else ""
            return text_reply(
                f"There is already a feed `{command.feed}`{origin}. Pick another name with `id:`."
            )
        return None

    def fetch_and_add(self, url: str, feed_id: str, call: Invocation, rules: RuleSet) -> Reply:
        added = AddedFeed(feed_id, url, call.user, self.now())
        candidate = FeedConfig(feed_id, url, rules.settings.interval_seconds, added=added)
        try:
            parsed = self.try_feed(candidate)
        except (FetchError, FeedError) as e:
            log.info("feed refused feed=%s user=%s reason=%s", feed_id, call.user, e.reason)
            kind = shown_failure(e.kind if isinstance(e, FetchError) else "parse")  # the detail: log only
            return text_reply(f"Could not add that feed: {kind}. Nothing was changed.")
        added = replace(added, title=" ".join(parsed.title.split()))
        if not self.store.add_feed(added):  # someone else took the id meanwhile
            return text_reply(f"There is already a feed `{feed_id}`. Pick another name with `id:`.")
        log.info("feed added feed=%s user=%s items=%d", feed_id, call.user, len(parsed.items))
        self.on_feeds_changed()
        return added_feed_reply(
            replace(candidate, added=added),
            added.title,
            len(parsed.items),
            rules.settings.backfill,
            call.command,
        )

    def _remove_feed(self, command: Command, call: Invocation) -> Reply:
        if command.feed is None:
            return text_reply(f"Remove which feed? Like `{call.command} remove-feed hacker-news`.")
        feed = self.rules().feed(command.feed)
        if feed is None:
            return text_reply(self.no_such_feed(command.feed, self.readable(call)))
        stored = any(added.id == feed.id for added in self.store.added_feeds())
        if feed.added is None:
            where = f"rules.yaml line {feed.location.line}" if feed.location else "rules.yaml"
            lines = [f"`{feed.id}` is managed in {where}, so not removable from Slack."]
            if stored and self.store.remove_feed(feed.id):
                # It was added from Slack first and then written into rules.yaml (as `export` says).
                lines.append("The copy added from Slack under that id is gone; rules.yaml's stays.")
                self.on_feeds_changed()
            return text_reply(" ".join(lines))
        dropped = [sub for sub in self.store.subscriptions() if sub.feed == feed.id]
        self.store.remove_feed(feed.id)
        self.store.remove_subscriptions(dropped)
        self.on_feeds_changed()
        # After the job is gone: should it be added again, its first poll is a first poll (no flood).
        self.store.forget_feed(feed.id)
        log.info("feed removed feed=%s user=%s subscriptions=%d", feed.id, call.user, len(dropped))
        return removed_feed_reply(feed, dropped, call.command)
