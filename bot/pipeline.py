"""One poll of one feed: fetch -> parse -> new? -> match -> deliver -> remember; and retries of pending
alerts. Talks to its ports (fetcher, store, sink) only; which alerts a poll owes is decided by pure code.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.addresses import AddressPolicy
from bot.errors import STOP_REQUESTS, DeliveryError, FeedError, FetchError, StateError, one_line_error
from bot.inflight import InFlight
from bot.intake import GROUPED_PER_POLL, ItemMatcher, cap_per_channel, match_items
from bot.model import (
    ChannelMatch,
    ChannelRule,
    FeedConfig,
    FetchResult,
    Item,
    Message,
    ParsedFeed,
    RuleSet,
    Settings,
)
from bot.notices import render_left_out_notice
from bot.oncall import OpenAlert, QueuedAlert, policy_of, route
from bot.parse import parse_feed
from bot.rules import RuleMatcher
from bot.store import CycleChange, PendingAlert, Store, pending_id

log = logging.getLogger(__name__)

PENDING_FIRST_RETRY = timedelta(seconds=30)
PENDING_MAX_RETRY = timedelta(hours=1)
PENDING_MAX_RETRY_OUTAGE = timedelta(minutes=5)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Fetcher(Protocol):
    """Returns the feed's bytes, or `not_modified` when the server answered 304; raises FetchError. A
    redirect off the feed's own host and port may only reach the addresses `redirect_policy` allows."""

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        redirect_policy: AddressPolicy = ...,
    ) -> FetchResult: ...


class AddressGuardedFetcher(Protocol):
    """Fetches a feed added from Slack: http(s) only, and only from the addresses `policy` allows, checked
    for the URL and for every redirect at the moment of connecting; raises FetchError."""

    def fetch(
        self, url: str, *, policy: AddressPolicy, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult: ...


class AlertSink(Protocol):
    """Delivers one match. Returns when the destination accepted it, with the message's id (Slack's ts)
    where there is one; raises DeliveryError otherwise. `since` is set when an earlier attempt (from then
    on) may have landed: look before posting again."""

    def deliver(self, match: ChannelMatch, source: str, *, since: datetime | None = None) -> str | None: ...

    def deliver_group(
        self, message: Message, items: Sequence[Item], *, since: datetime | None = None
    ) -> str | None: ...

    def deliver_notice(self, channel: str, text: str) -> str | None:
        """A plain message about the bot itself (a feed fails or works again, a flood's "N more"): no item, no
        buttons."""
        ...


@dataclass(frozen=True)
class PollReport:
    feed_id: str
    status: str  # ok | not_modified | unchanged | error | skipped (a gone feed between its daily checks)
    first_poll: bool = False
    items: int = 0
    new: int = 0
    alerts: int = 0
    posted: int = 0
    pending: int = 0
    error: str | None = None
    warning: str | None = None
    retry_after: float | None = None
    error_kind: str | None = None  # for metrics: see FetchError.kind; "parse" for a feed that is not one
    http_status: int | None = None  # what the feed host answered, when the fetch failed on it
    max_age: float | None = None  # how long the host says its answer stays fresh (Cache-Control)
    left_out: int = 0  # alerts over the per-channel cap of one poll, told as "N more" (bot.intake)
    failed_items: int = 0  # items skipped because matching them raised (bot.intake.FailedItem)
    item_error: str | None = None  # the first of those, in one line: the feed's health records it

    def log_line(self) -> str:
        parts = [f"poll feed={self.feed_id} status={self.status}"]
        if self.status in ("ok",):
            parts.append(
                f"items={self.items} new={self.new} alerts={self.alerts} posted={self.posted} "
                f"pending={self.pending}"
            )
            if self.left_out:
                parts.append(f"left_out={self.left_out}")
            if self.failed_items:
                parts.append(f"failed_items={self.failed_items}")
            if self.first_poll:
                parts.append("first_poll=yes")
        if self.error:
            parts.append(f"error={self.error!r}")
        if self.warning:
            parts.append(f"warning={self.warning!r}")
        return " ".join(parts)


@dataclass(frozen=True)
class Suppressed:
    match: ChannelMatch
    reason: str


@dataclass(frozen=True)
class Plan:
    """What a poll owes: alerts to deliver (oldest first) and matches it will not post, with the reason."""

    alerts: tuple[ChannelMatch, ...]
    suppressed: tuple[Suppressed, ...]


def newest_first(items: Sequence[Item]) -> list[Item]:
    """By publication time; undated items count as older; ties keep feed order (feeds list newest first)."""
    oldest = datetime.min.replace(tzinfo=UTC)
    order = {item.key: index for index, item in enumerate(items)}
    return sorted(items, key=lambda item: (-(item.published or oldest).timestamp(), order[item.key]))


def plan_alerts(
    items: Sequence[Item],
    matcher: ItemMatcher,
    *,
    first_poll: bool,
    backfill: int,
    is_delivered: Callable[[str, Item], bool],
    ignore_feed_filter: bool = False,
) -> Plan:
    """Pure: given a poll's unseen items, which matches to deliver. On a feed's first poll each channel gets
    at most `backfill` of its newest matches, and the rest of the feed is only marked seen (no flood)."""
    ranked = newest_first(items)
    per_channel: dict[str, int] = {}
    alerts_per_item: list[list[ChannelMatch]] = []
    suppressed: list[Suppressed] = []
    for item in ranked:
        alerts: list[ChannelMatch] = []
        alerts_per_item.append(alerts)
        for match in matcher.match_item(item, ignore_feed_filter=ignore_feed_filter):
            if first_poll and match.rules and all(rule.subscription is not None for rule in match.rules):
                # A topic added from Slack starts from the next new item, even on a feed's first poll.
                suppressed.append(
                    Suppressed(match, "first poll: topics added from Slack start from new items")
                )
                continue
            if first_poll:
                # An already-posted match still uses up the channel's backfill: it is one of the newest.
                count = per_channel.get(match.channel, 0)
                per_channel[match.channel] = count + 1
                if count >= backfill:
                    suppressed.append(
                        Suppressed(match, f"first poll: only the newest {backfill} per channel are posted")
                    )
                    continue
            if is_delivered(match.channel, item):
                suppressed.append(Suppressed(match, "already posted to this channel"))
                continue
            alerts.append(match)
    # Oldest first, so a channel reads in publication order.
    return Plan(tuple(m for alerts in reversed(alerts_per_item) for m in alerts), tuple(suppressed))


# A channel that cannot take posts (archived, deleted, bot not invited) is tried again this often, and
# an alert for it waits this long before it is given up.
CHANNEL_RECHECK = timedelta(hours=1)
BROKEN_CHANNEL_GIVE_UP = timedelta(days=1)


def next_pending_attempt(
    attempts: int, now: datetime, retry_after: float | None, *, outage: bool = False
) -> datetime:
    """30 s, doubling per attempt: up to 5 minutes while Slack as a whole fails (it will be back), up to an
    hour for a channel's own problem (a person has to fix it). Slack's Retry-After wins when longer."""
    cap = PENDING_MAX_RETRY_OUTAGE if outage else PENDING_MAX_RETRY
    delay: timedelta = min(PENDING_FIRST_RETRY * 2 ** max(attempts - 1, 0), cap)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return now + delay


class DeliveryObserver(Protocol):
    """Told of each delivery's outcome (metrics)."""

    def observe_posted(self, first_seen: datetime, posted: datetime) -> None: ...

    def observe_failed(self, error: DeliveryError) -> None: ...


class _Unobserved:
    def observe_posted(self, first_seen: datetime, posted: datetime) -> None:
        pass

    def observe_failed(self, error: DeliveryError) -> None:
        pass


def rematch(matcher: ItemMatcher, match: ChannelMatch, what: str) -> ChannelMatch | None:
    """An earlier match (a pending or queued alert) as `matcher`, the rules in force, sees it now: None when
    no rule of its channel matches any more. When matching raises, the earlier match stands (logged), so
    one item never holds back the alerts due with it."""
    try:
        matches = matcher.match_item(match.item)
    except STOP_REQUESTS:
        raise
    except BaseException as e:  # a panic in the Rust matchers too
        log.error(
            "%s not matched again channel=%s key=%r error=%r; it goes out as it was",
            what,
            match.channel,
            match.item.key,
            one_line_error(e),
        )
        return match
    return next((m for m in matches if m.channel == match.channel), None)


class Pipeline:
    def __init__(
        self,
        rules: RuleSet,
        *,
        store: Store,
        fetcher: Fetcher,
        sink: AlertSink,
        now: Callable[[], datetime] = utc_now,
        observer: DeliveryObserver | None = None,
        guarded_fetcher: AddressGuardedFetcher | None = None,
    ) -> None:
        # Builds a rule set's matcher (a seam: tests make matching slow, or raise, through it).
        self.make_matcher: Callable[[Sequence[ChannelRule]], ItemMatcher] = RuleMatcher
        # Rules and their compiled matcher, swapped together in one assignment: a poll reads them once.
        self._current: tuple[RuleSet, ItemMatcher] = (rules, self.make_matcher(rules.channels))
        self.store = store
        self.fetcher = fetcher  # the operator's feeds (rules.yaml): any URL or file path
        self.guarded_fetcher = guarded_fetcher  # feeds added from Slack; without one they fail to fetch
        self.sink = sink
        self.now = now
        # Held only while deciding what is owed (delivered? pending? taken by another thread?) and
        # claiming it, so an article in two feeds is never posted twice to a channel. Fetching, parsing,
        # matching and posting run outside it: one slow feed or flooded channel never holds up the others.
        self._delivery_lock = threading.Lock()
        self.in_flight = InFlight()
        self._last_success: datetime | None = None
        self._stopping = threading.Event()
        self.observer: DeliveryObserver = observer or _Unobserved()
        # Slack's refusal of the bot token at the last post, until a post succeeds again (for /healthz).
        self.token_refused: DeliveryError | None = None

    @property
    def rules(self) -> RuleSet:
        return self._current[0]

    def set_rules(self, rules: RuleSet) -> None:
        """New rules (the file changed, or a subscription from Slack) for the next poll. A poll already
        running keeps the rules it started with; no lock, so a slash command never waits for a poll."""
        self._current = (rules, self.make_matcher(rules.channels))

    @property
    def delivery_lock(self) -> threading.Lock:
        """Held while deciding what is owed and claiming it (see InFlight), never while posting."""
        return self._delivery_lock

    def match_for(self, channel: str, item: Item) -> ChannelMatch | None:
        """How the rules in force match this item for this channel (None: they do not)."""
        _, matcher = self._current
        return next((m for m in matcher.match_item(item) if m.channel == channel), None)

    def rematch(self, match: ChannelMatch, what: str) -> ChannelMatch | None:
        """`match` as the rules in force see it now (see rematch)."""
        return rematch(self._current[1], match, what)

    def stop_delivering(self) -> None:
        """For shutdown: alerts not yet started wait as pending instead of holding the exit up."""
        self._stopping.set()

    def fetch(
        self, feed: FeedConfig, settings: Settings, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """Through the guarded fetcher for a feed added from Slack, the plain one for the operator's."""
        policy = AddressPolicy(allow_private=settings.allow_private_feeds)
        if feed.added is None:
            return self.fetcher.fetch(
                feed.url, etag=etag, last_modified=last_modified, redirect_policy=policy
            )
        if self.guarded_fetcher is None:
            raise FetchError("feeds added from Slack need the guarded fetcher, and this bot has none")
        return self.guarded_fetcher.fetch(feed.url, policy=policy, etag=etag, last_modified=last_modified)

    def try_feed(self, feed: FeedConfig) -> ParsedFeed:
        """Fetches and parses a feed once, remembering nothing: what `/feeds add-feed` checks before it
        accepts one. Raises FetchError or FeedError."""
        fetched = self.fetch(feed, self.rules.settings)
        return parse_feed(fetched.body, feed.id, headers=fetched.headers, url=fetched.url)

    def poll_feed(self, feed: FeedConfig) -> PollReport:
        state = self.store.feed_state(feed.id)
        first_poll = state is None
        try:
            fetched = self.fetch(
                feed,
                self.rules.settings,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
            )
        except FetchError as e:
            return PollReport(
                feed.id,
                "error",
                first_poll,
                error=e.reason,
                retry_after=e.retry_after,
                error_kind=e.kind,
                http_status=e.status,
            )
        if fetched.not_modified and state is not None:
            return PollReport(feed.id, "not_modified", max_age=fetched.max_age)
        body_hash = hashlib.sha256(fetched.body).hexdigest()
        if state is not None and state.body_hash == body_hash:
            # The server ignored our conditional headers and sent the same bytes: nothing to parse.
            if (fetched.etag, fetched.last_modified) != (state.etag, state.last_modified):
                self.store.update_feed_headers(feed.id, fetched.etag, fetched.last_modified)
            return PollReport(feed.id, "unchanged", max_age=fetched.max_age)
        try:
            parsed = parse_feed(fetched.body, feed.id, headers=fetched.headers, url=fetched.url)
        except FeedError as e:
            return PollReport(feed.id, "error", first_poll, error=e.reason, error_kind="parse")

        if first_poll and not parsed.items:
            # An empty first answer is no baseline: committing it would make the next poll, with the real
            # items, look like a flood of news. The first poll with items is the backfill.
            return PollReport(
                feed.id, "ok", first_poll, warning=parsed.warning or "no items yet", max_age=fetched.max_age
            )
        source = parsed.title.strip() or feed.id
        unseen = self.store.unseen(feed.id, parsed.items)
        recovered_until = self.store.recovered_until(feed.id) if first_poll else None
        if recovered_until is not None:
            # The state was lost and rebuilt from the bot's messages (bot.recovery): not a first poll.
            # What was published before the bot's newest alert was seen then; later items are news.
            first_poll = False
            unseen = [item for item in unseen if item.published and item.published > recovered_until]
        rules, matcher = self._current
        # Matching is a poll's CPU work (long items, many rules, NEAR queries): done before the lock.
        matched = match_items(unseen, matcher)
        for failed in matched.failed:
            log.error(failed.log_line())
        max_per_cycle = rules.settings.max_alerts_per_cycle
        with self._delivery_lock:
            plan = plan_alerts(
                unseen,
                matched,
                first_poll=first_poll,
                backfill=rules.settings.backfill,
                is_delivered=self.store.is_delivered,
            )
            now = self.now()
            # An article already waiting for a channel (from another feed, or an earlier cycle), or being
            # posted by another thread right now, is theirs: attempting it here too could post it twice.
            fresh = [
                m
                for m in plan.alerts
                if not self.store.is_pending(m.channel, m.item) and self.in_flight.claim(m)
            ]
        try:
            capped = cap_per_channel(fresh, max_per_cycle=max_per_cycle)
            to_post, queued = self._route(capped.kept, source, now, max_per_cycle)
            posted, pending = self._attempt_all(to_post)
            # Every match of the poll is decided by now (posted, pending, queued, or left out): the items
            # are marked seen, so what was left out is never posted later (it was told as "N more").
            self.store.commit_cycle(
                CycleChange(
                    feed_id=feed.id,
                    polled_at=self.now(),
                    keys_in_feed=[item.key for item in parsed.items],
                    etag=fetched.etag,
                    last_modified=fetched.last_modified,
                    body_hash=body_hash,
                    new_pending=pending,
                    items=parsed.items,
                    new_queued=queued,
                    added_feed=feed.added is not None,
                )
            )
        finally:
            self.in_flight.release(fresh)
        self._tell_left_out(feed, capped.left_out, max_per_cycle)
        return PollReport(
            feed.id,
            "ok",
            first_poll,
            items=len(parsed.items),
            new=len(unseen),
            alerts=len(plan.alerts),
            posted=posted,
            pending=len(pending),
            warning=parsed.warning,
            max_age=fetched.max_age,
            left_out=sum(capped.left_out.values()),
            failed_items=len(matched.failed),
            item_error=matched.failed[0].log_line() if matched.failed else None,
        )

    def _tell_left_out(self, feed: FeedConfig, left_out: dict[str, int], max_per_cycle: int) -> None:
        """One "N more" message per capped channel. Sent once, after the poll is committed: if Slack
        refuses it, it is logged and not tried again (the items it counts are seen, and never posted)."""
        for channel, count in left_out.items():
            text = render_left_out_notice(feed.id, feed.url, count, max_per_cycle + GROUPED_PER_POLL)
            log.warning(
                "alerts left out feed=%s channel=%s count=%d (over the cap of one poll)",
                feed.id,
                channel,
                count,
            )
            if self.store.pause_of(channel, self.now()) is not None:
                continue  # a paused channel hears nothing from a poll; the line above says what it missed
            try:
                self.sink.deliver_notice(channel, text)
            except DeliveryError as e:
                log.error("left-out notice not sent feed=%s channel=%s error=%s", feed.id, channel, e.error)
            except Exception:  # a bug in the notice must not fail the poll that was committed
                log.exception("left-out notice crashed feed=%s channel=%s", feed.id, channel)

    @staticmethod
    def _route(
        matches: Sequence[ChannelMatch], source: str, now: datetime, max_per_cycle: int
    ) -> tuple[list[PendingAlert], list[QueuedAlert]]:
        """Which alerts go out now, one by one, and which wait for a grouped message (see oncall.route)."""
        to_post: list[PendingAlert] = []
        queued: list[QueuedAlert] = []
        posted_to: dict[str, int] = {}
        for match in matches:
            alert_id = pending_id(match.channel, match.item)
            count = posted_to.get(match.channel, 0)
            where = route(match, now, posted_this_cycle=count, max_per_cycle=max_per_cycle)
            if where.kind == "now":
                to_post.append(PendingAlert(alert_id, match, source, created=now))
                if not policy_of(match).high:  # high priority is never folded, nor crowds others out
                    posted_to[match.channel] = count + 1
            else:
                assert where.release_at is not None
                queued.append(QueuedAlert(alert_id, match, source, where.kind, now, where.release_at))
        return to_post, queued

    def _attempt_all(self, alerts: Sequence[PendingAlert]) -> tuple[int, list[PendingAlert]]:
        """Posts each alert, recording it the moment the sink accepts it, and returns (posted, the ones that
        failed, updated). After a failure no channel would escape (an outage, a refused token) the rest are
        not even tried, and after a channel's own failure the rest of that channel's wait too."""
        posted = 0
        failed: list[PendingAlert] = []
        blocked_everywhere: DeliveryError | None = None
        blocked_channels: dict[str, DeliveryError] = {}
        for alert in alerts:
            match = alert.match
            if self.store.is_delivered(match.channel, match.item):
                self.store.discard_pending(alert.id)  # the same article under another key, or a late success
                continue
            if blocked_everywhere is None and self._stopping.is_set():
                blocked_everywhere = DeliveryError("*", "shutting down", transient=True)
            pause = self.store.pause_of(match.channel, self.now())
            if pause is not None and not policy_of(match).high:  # a page goes out even when paused
                # Held, not failed: no attempt counted, and due the moment the pause ends (or on resume).
                failed.append(
                    replace(alert, next_attempt=pause.until, held=True, last_error="paused", failed_at=None)
                )
                continue
            error = blocked_everywhere or blocked_channels.get(match.channel)
            if error is None:
                problem = self.store.channel_problem(match.channel)
                if problem is not None and self.now() < problem.last_try + CHANNEL_RECHECK:
                    # Known not to take posts: tried again hourly, not with every alert meanwhile.
                    failed.append(
                        replace(
                            alert,
                            next_attempt=problem.last_try + CHANNEL_RECHECK,
                            last_error=problem.error,
                            failed_at=self.now(),
                            blocked_everywhere=False,
                            held=False,
                        )
                    )
                    continue
            attempted = error is None
            if error is None:
                error, ts = self._attempt(alert)
                if error is None:
                    posted += 1
                    self._last_success = self.now()
                    self.token_refused = None
                    if self.store.clear_channel_problem(match.channel):
                        log.info("channel takes posts again channel=%s", match.channel)
                    self.observer.observe_posted(alert.created, self._last_success)
                    try:
                        self.store.record_delivery(
                            match.channel,
                            match.item,
                            self._last_success,
                            open_alert=self._open_alert(alert, ts, self._last_success),
                        )
                    except StateError as e:
                        # Memory knows it was posted; with the disk failing, post nothing more for now.
                        log.error(
                            "cannot record a delivery: %s; delivery paused until state can be written", e
                        )
                        blocked_everywhere = DeliveryError("*", "state not writable", transient=True)
                    continue
                self.observer.observe_failed(error)
                if error.token_refused:
                    self.token_refused = error
                if error.channel_broken:
                    self.store.record_channel_problem(match.channel, error.error, self.now())
                if error.affects_all:
                    blocked_everywhere = error
                else:
                    blocked_channels[match.channel] = error
            failed.append(self._after_failure(alert, error, attempted=attempted))
        return posted, failed

    @staticmethod
    def _open_alert(alert: PendingAlert, ts: str | None, at: datetime) -> OpenAlert | None:
        """An alert with an Acknowledge button waits for it (and may escalate): remembered with its ts."""
        policy = policy_of(alert.match)
        if not policy.ack or ts is None:
            return None
        match = alert.match
        return OpenAlert(alert.id, match.channel, ts, match.item, match.keywords, alert.source, policy, at)

    def _attempt(self, alert: PendingAlert) -> tuple[DeliveryError | None, str | None]:
        channel, item = alert.match.channel, alert.match.item
        since = self.store.uncertain_since(channel, item)
        try:
            # Before the post, so that a kill while it is in flight leaves a trace: the next attempt, in
            # this process or the next, looks in the channel first instead of posting blind.
            self.store.record_uncertain(channel, item, self.now())
        except StateError as e:
            log.error("cannot record a delivery attempt: %s; delivery paused until state can be written", e)
            return DeliveryError("*", "state not writable", transient=True, affects_all=True), None
        try:
            ts = self.sink.deliver(alert.match, alert.source, since=since)
        except DeliveryError as e:
            if not e.uncertain and since is None:
                self.store.clear_uncertain(channel, item)  # refused, so surely not posted
            return e, None
        except Exception as e:  # a bug or a broken terminal must neither stop the other alerts nor lose this
            log.exception("delivery crashed channel=%s key=%s", channel, item.key)
            error = DeliveryError(
                channel, f"{type(e).__name__}: {e}", transient=True, affects_all=False, uncertain=True
            )
            return error, None
        return None, ts

    def _after_failure(self, alert: PendingAlert, error: DeliveryError, *, attempted: bool) -> PendingAlert:
        now = self.now()
        attempts = alert.attempts + (1 if attempted else 0)
        return replace(
            alert,
            attempts=attempts,
            next_attempt=next_pending_attempt(attempts, now, error.retry_after, outage=error.affects_all),
            last_error=error.error,
            failed_at=now,
            blocked_everywhere=error.affects_all,
            held=False,
        )

    def _is_due(self, alert: PendingAlert, now: datetime) -> bool:
        if alert.held:
            # Held by a pause: due as soon as no pause runs, whatever end time was noted when it was held
            # (the pause may have been shortened, or resumed while a poll was holding this alert).
            return self.store.pause_of(alert.match.channel, now) is None
        if alert.next_attempt is None or alert.next_attempt <= now:
            return True
        # Held back by an outage that has ended (Slack accepted a post since): skip the rest of the backoff.
        return (
            alert.blocked_everywhere
            and self._last_success is not None
            and (alert.failed_at is None or self._last_success >= alert.failed_at)
        )

    def retry_pending(self) -> tuple[int, int]:
        """Delivers pending alerts that are due, oldest first; returns (posted, still pending). They are
        matched again (with the rules in force) before the lock, and posted after it, claimed meanwhile."""
        rules, matcher = self._current
        now = self.now()
        due_now = [
            alert
            for alert in sorted(self.store.pending(), key=lambda p: p.created)
            if self._is_due(alert, now)
        ]
        current_of = {alert.id: rematch(matcher, alert.match, "pending alert") for alert in due_now}
        claimed: list[ChannelMatch] = []
        try:
            with self._delivery_lock:
                due = self._take_due(due_now, current_of, rules, now, claimed)
            posted, failed = self._attempt_all(due)
            for alert in failed:
                self.store.update_pending(alert)
            self.store.commit()
        finally:
            self.in_flight.release(claimed)
        return posted, len(self.store.pending())

    def _take_due(
        self,
        due_now: Sequence[PendingAlert],
        current_of: dict[str, ChannelMatch | None],
        rules: RuleSet,
        now: datetime,
        claimed: list[ChannelMatch],
    ) -> list[PendingAlert]:
        """Under the delivery lock: drops the alerts nobody wants any more, queues the ones a digest or
        quiet hours now hold, and claims the rest (appended to `claimed`) for this retry to post."""
        configured = {rule.channel for rule in rules.channels}
        still_pending = {alert.id for alert in self.store.pending()}
        due: list[PendingAlert] = []
        for alert in due_now:
            if alert.id not in still_pending:  # delivered or dropped since it was read
                continue
            current = current_of[alert.id]
            problem = self.store.channel_problem(alert.match.channel)
            if problem is not None and now - alert.created > BROKEN_CHANNEL_GIVE_UP:
                log.warning(
                    "pending alert dropped channel=%s key=%s (the channel has answered %s for over "
                    "a day; new items are posted once it takes posts again)",
                    alert.match.channel,
                    alert.match.item.key,
                    problem.error,
                )
                self.store.discard_pending(alert.id)
                continue
            if current is None:
                # The rule that asked for it is gone (the channel left the rules, the topic was
                # unsubscribed or muted): posting it later would surprise everyone.
                reason = (
                    "the channel has no rules or subscriptions any more"
                    if alert.match.channel not in configured
                    else ("no rule of the channel matches it any more")
                )
                log.warning(
                    "pending alert dropped channel=%s key=%s (%s)",
                    alert.match.channel,
                    alert.match.item.key,
                    reason,
                )
                self.store.discard_pending(alert.id)
                continue
            if not self.in_flight.claim(current):  # another retry (or poll) is posting it right now
                continue
            claimed.append(current)
            # Quiet hours or a digest that began while it waited (held by a pause, or failing) apply.
            where = route(current, now, posted_this_cycle=0, max_per_cycle=len(due) + 1)
            landed_maybe = self.store.uncertain_since(alert.match.channel, alert.match.item) is not None
            # A post that may have landed is retried as itself, so the channel is searched for it first.
            if where.kind in ("digest", "quiet") and where.release_at is not None and not landed_maybe:
                self.store.discard_pending(alert.id)
                self.store.queue(
                    QueuedAlert(alert.id, current, alert.source, where.kind, now, where.release_at)
                )
                continue
            # The rules in force now, so the message shows what matches now (and its mute button).
            due.append(replace(alert, match=current))
        return due
