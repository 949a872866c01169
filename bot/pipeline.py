"""One poll of one feed: fetch -> parse -> new? -> match -> deliver -> remember; and retries of pending
alerts. Talks to its ports (fetcher, store, sink) only; which alerts a poll owes is decided by pure code.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.errors import DeliveryError, FeedError, FetchError
from bot.model import ChannelMatch, FeedConfig, FetchResult, Item, RuleSet
from bot.parse import parse_feed
from bot.rules import RuleMatcher
from bot.store import CycleChange, PendingAlert, Store, pending_id

log = logging.getLogger(__name__)

PENDING_FIRST_RETRY = timedelta(seconds=30)
PENDING_MAX_RETRY = timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Fetcher(Protocol):
    """Returns the feed's bytes, or `not_modified` when the server answered 304; raises FetchError."""

    def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult: ...


class AlertSink(Protocol):
    """Delivers one match. Returns when the destination accepted it; raises DeliveryError otherwise."""

    def deliver(self, match: ChannelMatch, source: str) -> None: ...


@dataclass(frozen=True)
class PollReport:
    feed_id: str
    status: str  # ok | not_modified | unchanged | error
    first_poll: bool = False
    items: int = 0
    new: int = 0
    alerts: int = 0
    posted: int = 0
    pending: int = 0
    error: str | None = None
    warning: str | None = None
    retry_after: float | None = None

    def log_line(self) -> str:
        parts = [f"poll feed={self.feed_id} status={self.status}"]
        if self.status in ("ok",):
            parts.append(
                f"items={self.items} new={self.new} alerts={self.alerts} posted={self.posted} "
                f"pending={self.pending}"
            )
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
    matcher: RuleMatcher,
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


def next_pending_attempt(attempts: int, now: datetime, retry_after: float | None) -> datetime:
    delay: timedelta = min(PENDING_FIRST_RETRY * 2 ** max(attempts - 1, 0), PENDING_MAX_RETRY)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return now + delay


def feed_backoff(interval_seconds: int, consecutive_failures: int) -> float:
    """Seconds until a failing feed is tried again: the interval, doubling per failure, capped at an hour
    (or the interval itself when that is longer)."""
    if consecutive_failures <= 0:
        return float(interval_seconds)
    cap = max(interval_seconds, 3600)
    return float(min(interval_seconds * 2 ** (consecutive_failures - 1), cap))


class Pipeline:
    def __init__(
        self,
        rules: RuleSet,
        *,
        store: Store,
        fetcher: Fetcher,
        sink: AlertSink,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.rules = rules
        self.matcher = RuleMatcher(rules.channels)
        self.store = store
        self.fetcher = fetcher
        self.sink = sink
        self.now = now
        # Deliveries from different feeds' jobs are serialised, so an article in two feeds is never
        # posted twice to a channel by two threads at once. Fetching and parsing still run in parallel.
        self._delivery_lock = threading.Lock()

    def poll_feed(self, feed: FeedConfig) -> PollReport:
        state = self.store.feed_state(feed.id)
        first_poll = state is None
        try:
            fetched = self.fetcher.fetch(
                feed.url,
                etag=state.etag if state else None,
                last_modified=state.last_modified if state else None,
            )
        except FetchError as e:
            return PollReport(feed.id, "error", first_poll, error=e.reason, retry_after=e.retry_after)
        if fetched.not_modified and state is not None:
            return PollReport(feed.id, "not_modified")
        body_hash = hashlib.sha256(fetched.body).hexdigest()
        if state is not None and state.body_hash == body_hash:
            # The server ignored our conditional headers and sent the same bytes: nothing to parse.
            if (fetched.etag, fetched.last_modified) != (state.etag, state.last_modified):
                self.store.update_feed_headers(feed.id, fetched.etag, fetched.last_modified)
            return PollReport(feed.id, "unchanged")
        try:
            parsed = parse_feed(fetched.body, feed.id, headers=fetched.headers, url=fetched.url)
        except FeedError as e:
            return PollReport(feed.id, "error", first_poll, error=e.reason)

        source = parsed.title.strip() or feed.id
        unseen = self.store.unseen(feed.id, parsed.items)
        with self._delivery_lock:
            plan = plan_alerts(
                unseen,
                self.matcher,
                first_poll=first_poll,
                backfill=self.rules.settings.backfill,
                is_delivered=self.store.is_delivered,
            )
            posted, pending = self._deliver(plan.alerts, source)
            self.store.commit_cycle(
                CycleChange(
                    feed_id=feed.id,
                    polled_at=self.now(),
                    keys_in_feed=[item.key for item in parsed.items],
                    etag=fetched.etag,
                    last_modified=fetched.last_modified,
                    body_hash=body_hash,
                    new_pending=pending,
                )
            )
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
        )

    def _deliver(self, alerts: Iterable[ChannelMatch], source: str) -> tuple[int, list[PendingAlert]]:
        """Posts each alert, recording it the moment the sink accepts it. What fails becomes pending; after a
        failure that no channel would escape (an outage, a refused token) the rest are not even tried."""
        posted = 0
        pending: list[PendingAlert] = []
        blocked_everywhere: DeliveryError | None = None
        blocked_channels: dict[str, DeliveryError] = {}
        for match in alerts:
            if self.store.is_delivered(match.channel, match.item):
                continue  # the same article under another key, earlier in this cycle
            error = blocked_everywhere or blocked_channels.get(match.channel)
            if error is None:
                try:
                    self.sink.deliver(match, source)
                except DeliveryError as e:
                    error = e
                    if e.affects_all:
                        blocked_everywhere = e
                    else:
                        blocked_channels[match.channel] = e
                else:
                    self.store.record_delivery(match.channel, match.item, self.now())
                    posted += 1
                    continue
            now = self.now()
            pending.append(
                PendingAlert(
                    id=pending_id(match.channel, match.item.key),
                    match=match,
                    source=source,
                    created=now,
                    attempts=1,
                    next_attempt=next_pending_attempt(1, now, error.retry_after),
                    last_error=error.error,
                )
            )
        return posted, pending

    def retry_pending(self) -> tuple[int, int]:
        """Delivers pending alerts that are due; returns (posted, still pending)."""
        with self._delivery_lock:
            now = self.now()
            due = sorted(
                (p for p in self.store.pending() if p.next_attempt is None or p.next_attempt <= now),
                key=lambda p: p.created,
            )
            posted = 0
            blocked_everywhere = False
            blocked_channels: set[str] = set()
            for alert in due:
                channel = alert.match.channel
                if self.store.is_delivered(channel, alert.match.item):
                    self.store.discard_pending(alert.id)
                    continue
                if blocked_everywhere or channel in blocked_channels:
                    continue
                try:
                    self.sink.deliver(alert.match, alert.source)
                except DeliveryError as e:
                    attempts = alert.attempts + 1
                    self.store.update_pending(
                        PendingAlert(
                            id=alert.id,
                            match=alert.match,
                            source=alert.source,
                            created=alert.created,
                            attempts=attempts,
                            next_attempt=next_pending_attempt(attempts, now, e.retry_after),
                            last_error=e.error,
                        )
                    )
                    if e.affects_all:
                        blocked_everywhere = True
                    else:
                        blocked_channels.add(channel)
                else:
                    self.store.record_delivery(channel, alert.match.item, self.now())
                    posted += 1
            self.store.commit()
            return posted, len(self.store.pending())
