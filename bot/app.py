"""The one place that builds the adapters (store, fetcher, Slack or console sink), resolves channel names
and runs the scheduler. Everything it wires together can be built separately in tests.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.blocks import render_group
from bot.config import Environment, load_rules
from bot.errors import STOP_REQUESTS, BotError, ConfigError, DeliveryError, one_line_error, shown_failure
from bot.fetch import GuardedFetcher, HttpFetcher
from bot.health import (
    FeedHealth,
    health_after_notices,
    health_after_poll,
    host_delay,
    is_every_feed_failing,
    next_poll_delay,
)
from bot.home import FeedStatus
from bot.membership import ChannelDirectory
from bot.metrics import Metrics
from bot.model import ChannelMatch, FeedConfig, RuleSet
from bot.notices import render_escalation, render_feed_notice
from bot.oncall import (
    ESCALATION_EVENT_TYPE,
    OpenAlert,
    QueuedAlert,
    describe_age,
    due_escalations,
    due_groups,
)
from bot.pipeline import (
    AddressGuardedFetcher,
    AlertSink,
    Fetcher,
    Pipeline,
    PollReport,
    next_pending_attempt,
    utc_now,
)
from bot.recovery import recover_deliveries
from bot.service import merge_rules
from bot.slack import (
    ConsoleSink,
    MentionResolver,
    SlackChannel,
    SlackClient,
    SlackSink,
    channel_history,
    check_auth,
    check_mentions,
    list_channels,
)
from bot.storage import open_store
from bot.store import Store

log = logging.getLogger(__name__)

PENDING_RETRY_SECONDS = 30
RULES_CHECK_SECONDS = 5.0  # how soon an edit of rules.yaml takes effect
SIGNAL_CHECK_SECONDS = 0.2  # how soon SIGTERM or Ctrl-C begins the stop
ARCHIVE_PRUNE_SECONDS = 3600
TICK_SECONDS = 5  # how often on-call timers (escalations) are evaluated


def recover_state(
    client: SlackClient, rules: RuleSet, store: Store, now: datetime, *, bot_id: str | None
) -> None:
    """With no state at start (a first start, or files wiped by the host), rebuilds what was delivered and
    when the bot last posted from its own messages in each channel of the rules, before anything is
    posted. Finding none, the bot starts as on a first poll."""
    channels = sorted({rule.channel for rule in rules.channels if rule.channel[:1] in ("C", "G")})
    oldest = now - RECOVERY_WINDOW
    try:
        recovery = recover_deliveries(
            (
                (channel, message)
                for channel in channels
                for message in channel_history(client, channel, oldest)
            ),
            bot_id=bot_id,
        )
    except DeliveryError as e:
        log.warning("cannot look for earlier alerts error=%s; starting as on a first poll", e.error)
        return
    if recovery.newest_alert is None:
        log.info("no state and no earlier alerts in %d channels: first poll", len(channels))
        return
    store.record_recovery(recovery.newest_alert, recovery.deliveries, [feed.id for feed in rules.feeds])
    log.warning(
        "state rebuilt from slack channels=%d alerts=%d newest=%s (the state files were missing: items "
        "published before then count as seen, later ones as new)",
        len(channels),
        len(recovery.deliveries),
        recovery.newest_alert.isoformat(),
    )


# How far back a start without state looks for the bot's own alerts.
RECOVERY_WINDOW = timedelta(days=30)


def resolve_rules(rules: RuleSet, client: SlackClient, store: Store) -> RuleSet:
    """Replaces '#name' channels with IDs (conversations.list, once at start). A renamed channel is found by
    the ID it had; a channel that is archived, deleted or hidden from the bot is reported with its place in
    the rules file and its entry left out, so its alerts do not pile up; the other entries run. When Slack
    cannot be reached, the IDs remembered from the last start are used."""
    names = {rule.channel.lower() for rule in rules.channels if rule.channel.startswith("#")}
    if not names:
        return rules
    remembered = store.channel_ids()
    try:
        listed = list_channels(client, names)
    except DeliveryError as e:
        if not names <= set(remembered):
            raise BotError(
                f"cannot resolve channel names through Slack ({e.error}); try again shortly"
            ) from e
        log.warning(
            "slack unreachable error=%s; using the channel IDs remembered from the last start", e.error
        )
        listed = [SlackChannel(remembered[name], name.lstrip("#")) for name in names]
    by_name = {"#" + channel.name: channel for channel in listed}
    by_id = {channel.id: channel for channel in listed}
    store.remember_channel_ids(
        {name: channel.id for name, channel in by_name.items() if name in names and not channel.archived}
    )
    kept = []
    for rule in rules.channels:
        name = rule.channel.lower()
        if not rule.channel.startswith("#"):
            kept.append(rule)
            continue
        channel = by_name.get(name) or by_id.get(remembered.get(name, ""))
        if channel is None:
            log.error(
                "channel not found channel=%s at=%s (no such channel, or a private one the bot is not in: "
                "invite it); its alerts are not posted",
                rule.channel,
                rule.location,
            )
        elif channel.archived:
            log.error(
                "channel archived channel=%s at=%s (unarchive it, or remove its entry); its alerts are not "
                "posted",
                rule.channel,
                rule.location,
            )
        else:
            if "#" + channel.name != name:
                log.warning(
                    "channel renamed channel=%s at=%s now=#%s id=%s; alerts go there (update the rules)",
                    rule.channel,
                    rule.location,
                    channel.name,
                    channel.id,
                )
            kept.append(replace(rule, channel=channel.id))
    return replace(rules, channels=tuple(kept))


def rules_stamp(path: Path) -> tuple[int, int] | None:
    """What tells a changed rules file: its modification time and size."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


@dataclass
class App:
    file_rules: RuleSet  # rules.yaml as loaded, '#names' resolved; Slack-added terms are merged on top
    store: Store
    pipeline: Pipeline
    console: bool
    client: SlackClient | None = None
    mentions: MentionResolver | None = None
    rules_path: Path | None = None
    loaded_stamp: tuple[int, int] | None = None
    started: datetime | None = None
    metrics: Metrics = field(default_factory=Metrics)
    # Slash commands and the rules-file watcher both recompute the merged rules: one at a time, so a
    # stale merge never overwrites a newer one.
    _rules_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Backoff of grouped messages (by channel) and escalations (by alert) after Slack refused them.
    _retry_at: dict[str, datetime] = field(default_factory=dict, repr=False)
    _failures: dict[str, int] = field(default_factory=dict, repr=False)
    # One release of grouped messages at a time: it posts outside the delivery lock.
    _release_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Under `run`: brings the scheduler's feed jobs in line with the rules in force (see run_scheduler).
    resync_jobs: Callable[[], None] | None = None
    # Each feed's latest poll (App Home, /healthz), and when it may be polled next where that is later than
    # its interval says (backoff, or its host asked). In memory: what a restart must know, the feed's
    # health, is in the store, and the next poll of a failing feed follows from it.
    # The fetchers build_app made, closed with the App; one passed in is its caller's to close.
    owned_fetchers: tuple[HttpFetcher | GuardedFetcher, ...] = ()
    _reports: dict[str, PollReport] = field(default_factory=dict, repr=False)
    _next_poll: dict[str, datetime] = field(default_factory=dict, repr=False)
    # Slack's word on channel privacy and membership, for who may read which feed (bot.privacy).
    directory: ChannelDirectory | None = None
    _merged_at: float = field(default=0.0, repr=False)  # by the directory's clock

    def __post_init__(self) -> None:
        self.pipeline.observer = self.metrics
        self.metrics.watch(
            pending=lambda: len(self.store.pending()),
            failing_feeds=lambda: sum(
                1 for feed in self.rules.feeds if self.store.feed_health(feed.id).failures
            ),
            slack_auth_ok=lambda: self.pipeline.token_refused is None,
        )

    @property
    def rules(self) -> RuleSet:
        """The rules in force: the file's entries and the subscriptions added from Slack."""
        return self.pipeline.rules

    def refresh_rules(self) -> None:
        """Applies the current file rules, and the feeds and subscriptions added from Slack, to the next
        poll."""
        with self._rules_lock:
            self._merged_at = self.directory.clock() if self.directory is not None else 0.0
            self.pipeline.set_rules(
                merge_rules(
                    self.file_rules, self.store.subscriptions(), self.store.added_feeds(), self.directory
                )
            )

    def visible_feeds(self, user: str) -> frozenset[str] | None:
        """The feeds `user` may read through the bot (None without Slack: no one to tell apart)."""
        return self.directory.visible_feeds(self.rules, user) if self.directory is not None else None

    def refresh_personal_watches_if_due(self) -> None:
        """Personal watches follow their owners' channel memberships, as Slack tells them now and then."""
        if self.directory is not None and self.directory.clock() - self._merged_at >= self.directory.ttl:
            self.refresh_rules()

    def feeds_changed(self) -> None:
        """A feed was added or removed from Slack: it is in the rules at once, and under `run` its job is
        added (first poll now) or dropped without waiting for the next look at the rules file."""
        self.refresh_rules()
        for gone in set(self._reports) - {feed.id for feed in self.rules.feeds}:
            self._reports.pop(gone, None)
            self._next_poll.pop(gone, None)
        if self.resync_jobs is not None:
            self.resync_jobs()

    def reload_rules_if_changed(self) -> bool:
        """Re-reads the rules file when it changed. An invalid edit keeps the last good rules, logged with
        every problem; returns whether new rules took effect."""
        if self.rules_path is None:
            return False
        stamp = rules_stamp(self.rules_path)
        if stamp is None or stamp == self.loaded_stamp:
            return False
        self.loaded_stamp = stamp
        try:
            rules = load_rules(self.rules_path)
            if self.client is not None:
                rules = resolve_rules(rules, self.client, self.store)
        except ConfigError as e:
            log.error(
                "rules reload failed file=%s; keeping the last good rules: %s",
                self.rules_path,
                " | ".join(e.problems),
            )
            return False
        except BotError as e:
            log.error("rules reload failed file=%s; keeping the last good rules: %s", self.rules_path, e)
            self.loaded_stamp = None  # try again next time
            return False
        with self._rules_lock:
            self.file_rules = rules
        self.refresh_rules()
        log.info(
            "rules reloaded file=%s feeds=%d channel_entries=%d",
            self.rules_path,
            len(rules.feeds),
            len(rules.channels),
        )
        return True

    def prune_archive(self) -> int:
        retention = timedelta(seconds=self.rules.settings.retention_seconds)
        pruned = self.store.prune_archive(self.pipeline.now(), retention)
        if pruned:
            log.info("archive pruned items=%d", pruned)
        return pruned

    def feed_statuses(self) -> list[FeedStatus]:
        statuses = []
        for feed in self.rules.feeds:
            health = self.store.feed_health(feed.id)
            state = self.store.feed_state(feed.id)
            report = self._reports.get(feed.id)
            last_success = state.last_polled if state else None
            polls = [moment for moment in (last_success, health.last_failure) if moment is not None]
            statuses.append(
                FeedStatus(
                    id=feed.id,
                    url=feed.url,
                    last_poll=max(polls, default=None),
                    # After a restart, before its first poll, a failing feed is known from the store.
                    last_status=report.status if report else ("error" if health.failures else None),
                    last_error=health.last_error if health.failures else None,
                    consecutive_failures=health.failures,
                    items_seen=self.store.seen_count(feed.id),
                    failing_since=health.failing_since,
                    gone_since=health.gone_since,
                )
            )
        return statuses

    def status(self) -> dict[str, object]:
        """For /healthz: each feed's last poll and error, and how many alerts wait. 'failing' when no feed
        works: each is failing or gone (see is_every_feed_failing)."""
        feeds = self.feed_statuses()
        every_feed_failing = is_every_feed_failing([self.store.feed_health(feed.id) for feed in feeds])
        refused = self.pipeline.token_refused
        if refused is not None:
            verdict = "slack_auth_failed"
        elif every_feed_failing:
            verdict = "failing"
        else:
            verdict = "ok"
        return {
            "status": verdict,
            "mode": "console" if self.console else "slack",
            "slack_error": refused.error if refused is not None else None,
            "feeds": {
                feed.id: {
                    "last_poll": feed.last_poll.isoformat() if feed.last_poll else None,
                    "last_status": feed.last_status,
                    "last_error": feed.last_error,
                    "consecutive_failures": feed.consecutive_failures,
                    "failing_since": feed.failing_since.isoformat() if feed.failing_since else None,
                    "gone_since": feed.gone_since.isoformat() if feed.gone_since else None,
                    "items_seen": feed.items_seen,
                }
                for feed in feeds
            },
            "pending_alerts": len(self.store.pending()),
            "broken_channels": {
                problem.channel: {"error": problem.error, "since": problem.since.isoformat()}
                for problem in self.store.channel_problems()
            },
        }

    def tick(self) -> int:
        """The on-call ticker: sends the grouped messages (digests, the end of quiet hours, floods) and the
        escalations that are due. Returns how many messages went out. Timers are data in the store, so a
        restart loses none."""
        sent = 0
        # Each part on its own: a failure in one never holds up the others (above all, escalations).
        for part in (self.release_paused, self.release_groups, self.escalate):
            try:
                sent += part() or 0
            except STOP_REQUESTS:
                raise
            except BaseException:
                log.exception("on-call tick part crashed part=%s", part.__name__)
        return sent

    def release_paused(self) -> None:
        """A pause that has run out: its held alerts go out now, not at the next pending retry."""
        now = self.pipeline.now()
        if any(p.held and self.store.pause_of(p.match.channel, now) is None for p in self.store.pending()):
            self.retry_pending()

    def release_groups(self) -> int:
        """Posts the queued alerts that are due, one grouped message per (channel, kind, release time).
        What each message lists is decided and fixed in the store under the delivery lock; the posts come
        after it, so a channel's long release never holds up another channel's alert. The alerts stay
        queued until posted, so no poll takes them meanwhile; one release runs at a time."""
        sent = 0
        with self._release_lock:
            now = self.pipeline.now()
            # Matching is the slow part (as in a poll): the alerts due are matched again before the lock.
            current = self._current_matches(now)
            with self.pipeline.delivery_lock:
                batches_by_channel = self._due_batches(now, current)
            for (channel, kind), batches in batches_by_channel.items():
                if self._retry_at.get(channel, now) > now:  # Slack refused it earlier in this release
                    continue
                for batch in batches:
                    try:
                        posted = self._post_group(channel, kind, batch, now)
                    except STOP_REQUESTS:
                        raise
                    except BaseException:  # a bug in one group must not stop the others, or the escalations
                        log.exception("grouped message crashed channel=%s", channel)
                        posted = False
                    if not posted:
                        break
                    sent += 1
            self.store.commit()
        return sent

    def _due_batches(
        self, now: datetime, current: dict[str, ChannelMatch | None]
    ) -> dict[tuple[str, str], list[list[QueuedAlert]]]:
        """Under the delivery lock: the grouped messages due now, each one's items fixed in the store.
        `current` is _current_matches, taken just before the lock."""
        work: dict[tuple[str, str], list[list[QueuedAlert]]] = {}
        configured = {rule.channel for rule in self.rules.channels}
        for (channel, kind, _), alerts in due_groups(self.store.queued(), now).items():
            if channel not in configured:  # saved groups too: nobody wants them posted any more
                for alert in alerts:
                    log.warning(
                        "queued alert dropped channel=%s key=%s (the channel has no rules any more)",
                        channel,
                        alert.match.item.key,
                    )
                    self.store.discard_queued(alert.id)
                continue
            if self.store.pause_of(channel, now) is not None or self._retry_at.get(channel, now) > now:
                continue
            frozen: dict[str, list[QueuedAlert]] = {}
            loose: list[QueuedAlert] = []
            for alert in alerts:
                if alert.group is not None:
                    frozen.setdefault(alert.group, []).append(alert)
                else:
                    loose.extend(self._still_owed(alert, current))
            # A message whose answer was lost (or cut off by a crash) first, exactly as it was.
            batches = list(frozen.values()) + self._new_batches(channel, kind, loose, now)
            work.setdefault((channel, kind), []).extend(batches)
        return work

    def _current_matches(self, now: datetime) -> dict[str, ChannelMatch | None]:
        """Outside the delivery lock: how the rules in force match each queued alert due now and not yet
        fixed in a message, by alert id (None: no rule of its channel matches it any more)."""
        current: dict[str, ChannelMatch | None] = {}
        for alerts in due_groups(self.store.queued(), now).values():
            for alert in alerts:
                if alert.group is not None:
                    continue
                current[alert.id] = self.pipeline.rematch(alert.match, "queued alert")
        return current

    def _still_owed(self, alert: QueuedAlert, current: dict[str, ChannelMatch | None]) -> list[QueuedAlert]:
        """A queued alert as the rules in force see it (`current`; one queued since was matched by the
        poll that queued it): dropped when no rule matches any more, or when the article was delivered
        meanwhile (from another feed)."""
        match = current.get(alert.id, alert.match)
        if match is None or self.store.is_delivered(alert.match.channel, alert.match.item):
            reason = "no rule of the channel matches it any more" if match is None else "already delivered"
            log.warning(
                "queued alert dropped channel=%s key=%s (%s)",
                alert.match.channel,
                alert.match.item.key,
                reason,
            )
            self.store.discard_queued(alert.id)
            return []
        return [replace(alert, match=match)]

    def _new_batches(
        self, channel: str, kind: str, alerts: list[QueuedAlert], now: datetime
    ) -> list[list[QueuedAlert]]:
        """Splits the alerts into messages as Block Kit's limits require, and fixes each message's items
        in the store before anything is posted."""
        unique: dict[str, QueuedAlert] = {}
        for alert in alerts:  # one article through two feeds or guids is listed once
            identity = alert.match.item.link or alert.id
            if identity in unique:
                self.store.discard_queued(alert.id)
                continue
            unique[identity] = alert
        alerts = list(unique.values())
        if not alerts:
            return []
        by_item = {(a.match.item.feed_id, a.match.item.key): a for a in alerts}
        batches = []
        for number, message in enumerate(render_group(channel, [(a.match, a.source) for a in alerts], "")):
            payload = message.metadata["event_payload"]
            batch = [by_item[entry["feed_id"], entry["item_key"]] for entry in payload["items"]]
            group = f"{channel}/{kind}/{now.isoformat()}/{number}"
            self.store.assign_group([a.id for a in batch], group)
            batches.append([replace(a, group=group) for a in batch])
        return batches

    def _post_group(self, channel: str, kind: str, batch: list[QueuedAlert], now: datetime) -> bool:
        count = f"{len(batch)} item{'s' if len(batch) != 1 else ''}"
        heading = {
            "digest": f"Digest: {count} since the last one",
            "quiet": f"While quiet hours were on: {count}",
        }.get(kind, f"{count} more from this poll (grouped, so the channel is not flooded)")
        [message] = render_group(channel, [(a.match, a.source) for a in batch], heading, split=False)
        items = [alert.match.item for alert in batch]
        since_times = [t for t in (self.store.uncertain_since(channel, i) for i in items) if t]
        for item in items:  # before the post: a kill mid-request leaves a trace (as for single alerts)
            self.store.record_uncertain(channel, item, now)
        try:
            self.pipeline.sink.deliver_group(message, items, since=min(since_times) if since_times else None)
        except DeliveryError as e:
            self._back_off(channel, e, now)
            self.metrics.observe_failed(e)
            log.error("grouped message not posted channel=%s error=%s", channel, e.error)
            return False
        self._failures.pop(channel, None)
        self._retry_at.pop(channel, None)
        for alert in batch:
            self.store.record_delivery(channel, alert.match.item, now)  # also takes it off the queue
            self.metrics.observe_posted(alert.queued_at, now)  # a digest's wait is part of its latency
        log.info("grouped message posted channel=%s kind=%s items=%d", channel, kind, len(items))
        return True

    def _back_off(self, key: str, error: DeliveryError, now: datetime) -> None:
        """Retries of a grouped message or an escalation: doubling from 30 s, up to 5 minutes while Slack
        as a whole fails and an hour for a problem of the channel's own (as for single alerts)."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        self._retry_at[key] = next_pending_attempt(failures, now, error.retry_after, outage=error.affects_all)

    def escalate(self) -> int:
        """Sends the escalations that are due: a threaded reply mentioning `to`, carrying metadata, so an
        attempt whose answer was lost (or cut off by a crash) is found in the thread, not sent twice."""
        if self.client is None:
            return 0
        sent = 0
        now = self.pipeline.now()
        for due in due_escalations(self.store.open_alerts(), now):
            alert, escalate = due.alert, due.alert.policy.escalate
            assert escalate is not None  # due_escalations only returns escalating alerts
            if self._retry_at.get(alert.id, now) > now:
                continue
            latest = self.store.open_alert(alert.id)
            if latest is None or not latest.open:  # acknowledged since this tick began
                continue
            try:
                if alert.escalation_attempt == due.step and self._escalation_in_thread(alert, due.step):
                    self.store.record_escalation(alert.id, due.step)
                    continue
                self.store.record_escalation_attempt(alert.id, due.step)
                text, blocks = self._escalation_message(alert, due.step, now)
                self.client.call(
                    "chat.postMessage",
                    idempotent=False,
                    channel=alert.channel,
                    thread_ts=alert.ts,
                    text=text,
                    blocks=list(blocks),
                    unfurl_links=False,
                    metadata={
                        "event_type": ESCALATION_EVENT_TYPE,
                        "event_payload": {"alert": alert.id, "step": due.step},
                    },
                )
            except DeliveryError as e:
                self._back_off(alert.id, e, now)
                log.error(
                    "escalation not sent channel=%s alert=%s error=%s", alert.channel, alert.id, e.error
                )
                continue
            self._failures.pop(alert.id, None)
            self._retry_at.pop(alert.id, None)
            self.store.record_escalation(alert.id, due.step)
            log.info("escalation sent channel=%s step=%d key=%s", alert.channel, due.step, alert.item.key)
            sent += 1
        return sent

    def _escalation_message(
        self, alert: OpenAlert, step: int, now: datetime
    ) -> tuple[str, tuple[dict[str, object], ...]]:
        escalate = alert.policy.escalate
        assert escalate is not None
        mention = self.mentions.resolve(escalate.to) if self.mentions else None
        return render_escalation(alert, step, describe_age(alert.posted_at, now), mention)

    def _escalation_in_thread(self, alert: OpenAlert, step: int) -> bool:
        assert self.client is not None
        for reply in self.client.paginate(
            "conversations.replies",
            "messages",
            channel=alert.channel,
            ts=alert.ts,
            include_all_metadata=True,
            max_pages=5,
        ):
            metadata = reply.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if (
                metadata.get("event_type") == ESCALATION_EVENT_TYPE
                and payload.get("alert") == alert.id
                and int(payload.get("step", 0)) >= step
            ):
                return True
        return False

    def safe_tick(self) -> None:
        try:
            self.tick()
        except STOP_REQUESTS:
            raise
        except BaseException:  # a bug must not stop the ticker job
            log.exception("on-call tick crashed")

    def poll_all_once(self) -> list[PollReport]:
        """Every feed once, `settings.poll_concurrency` at a time; the reports in the rules' order."""
        feeds = self.rules.feeds
        workers = min(self.rules.settings.poll_concurrency, len(feeds))
        if workers <= 1:
            return [self._poll_unless_gone(feed) for feed in feeds]
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="poll") as pool:
            return list(pool.map(self._poll_unless_gone, feeds))

    def _poll_unless_gone(self, feed: FeedConfig) -> PollReport:
        """A gone feed is checked once a day however often cron runs `run --once`; any other is polled."""
        health = self.store.feed_health(feed.id)
        due = self.next_poll_at(feed)
        if health.gone_since is None or due is None or self.pipeline.now() >= due:
            return self.poll(feed)
        report = PollReport(
            feed.id,
            "skipped",
            warning=f"gone (HTTP 410) since {health.gone_since:%Y-%m-%d %H:%M} UTC; next check after "
            f"{due:%Y-%m-%d %H:%M} UTC",
        )
        log.info(report.log_line())
        return report

    def poll(self, feed: FeedConfig) -> PollReport:
        """A job boundary: whatever goes wrong is logged and reported, and the other feeds carry on."""
        try:
            report = self.pipeline.poll_feed(feed)
        except STOP_REQUESTS:
            raise
        except BaseException as e:  # a bug, a broken disk, a panic in a Rust extension: not the scheduler's
            log.exception("poll crashed feed=%s error=%r", feed.id, one_line_error(e))
            report = PollReport(feed.id, "error", error=one_line_error(e), error_kind="crash")
        self.metrics.observe_poll(report)
        self._reports[feed.id] = report
        rules = self.rules
        following = tuple(dict.fromkeys(r.channel for r in rules.channels if r.applies_to(feed.id)))
        # What /healthz, App Home and the Slack notices show: the kind only (the log line has the detail).
        # An item skipped because matching it raised counts as a failure of the poll (the feed's health
        # says so, and it backs off) though the poll's other alerts went out; the next poll passes it by.
        failure = (
            shown_failure(report.error_kind)
            if report.status == "error"
            else ("an item could not be matched" if report.item_error else None)
        )
        health = health_after_poll(
            self.store.feed_health(feed.id),
            now=self.pipeline.now(),
            error=failure,
            http_status=report.http_status,
            notice_after=rules.settings.feed_failure_notice_after,
            following=following,
        )
        if failure is not None:
            gone = f" gone_since={health.gone_since.isoformat()}" if health.gone_since else ""
            log.warning(report.log_line() + f" failures={health.failures}{gone}")
        else:
            log.info(report.log_line())
        try:
            self.store.record_feed_health(feed.id, health)
            self._send_feed_notice(feed.id, health, following)
        except STOP_REQUESTS:
            raise
        except BaseException:  # the poll itself is done; its report still counts
            log.exception("feed health not saved, or its notice not sent feed=%s", feed.id)
        return report

    def _send_feed_notice(self, feed_id: str, health: FeedHealth, following: tuple[str, ...]) -> None:
        """Sends the notice the feed's health owes (it fails, or works again) through the alerts' sink, and
        records who has had it, so that nobody gets it twice, a restart included."""
        if not health.owed:
            return
        text = render_feed_notice(feed_id, health)
        sent = []
        for channel in health.owed:
            if channel not in following:
                continue
            try:
                self.pipeline.sink.deliver_notice(channel, text)
            except DeliveryError as e:
                log.error(
                    "feed notice not sent feed=%s notice=%s channel=%s error=%s (%s)",
                    feed_id,
                    health.notice,
                    channel,
                    e.error,
                    "it may have landed: not sent again" if e.uncertain else "tried again at the next poll",
                )
                if not e.uncertain:
                    continue
            sent.append(channel)
        if sent:
            log.info("feed notice sent feed=%s notice=%s channels=%s", feed_id, health.notice, ",".join(sent))
        self.store.record_feed_health(feed_id, health_after_notices(health, sent, following))

    def retry_pending(self) -> tuple[int, int]:
        try:
            posted, still = self.pipeline.retry_pending()
        except STOP_REQUESTS:
            raise
        except BaseException:  # a job boundary: the next retry runs all the same
            log.exception("pending retry crashed")
            return 0, len(self.store.pending())
        if posted or still:
            log.info("pending retry posted=%d still_pending=%d", posted, still)
        return posted, still

    def poll_feed_when_due(self, feed_id: str) -> PollReport | None:
        """The scheduler's job, by feed id: the feed's settings are looked up in the rules in force."""
        feed = self.rules.feed(feed_id)
        return None if feed is None else self.poll_when_due(feed)

    def poll_when_due(self, feed: FeedConfig) -> PollReport | None:
        """The scheduler's job: polls unless the feed is not due yet (then None): it is backing off after
        failures, is gone, or its host asked for time (Retry-After, Cache-Control: see
        bot.health.next_poll_delay). This is data here, not a rescheduled job: changing the scheduler from
        inside a job deadlocks its shutdown."""
        started = self.pipeline.now()
        due = self.next_poll_at(feed)
        # The job fires on the interval's grid; a second of slack keeps a due retry from slipping a tick.
        if due is not None and started + timedelta(seconds=1) < due:
            return None
        report = self.poll(feed)
        asked = host_delay(
            failed=report.status == "error",
            http_status=report.http_status,
            retry_after=report.retry_after,
            max_age=report.max_age,
        )
        health = self.store.feed_health(feed.id)
        delay = next_poll_delay(feed.interval_seconds, health, asked)
        if delay > feed.interval_seconds:
            self._next_poll[feed.id] = started + timedelta(seconds=delay)
            why = "gone" if health.gone_since else "backoff" if health.failures else "host asked"
            log.info("feed next poll later feed=%s next_poll_in=%ds reason=%s", feed.id, delay, why)
        else:
            self._next_poll.pop(feed.id, None)
        return report

    def next_poll_at(self, feed: FeedConfig) -> datetime | None:
        """When the feed may be polled next, if that is later than its interval says (None: at its next
        tick). After a restart a failing feed's backoff follows from its health in the store."""
        if feed.id in self._next_poll:
            return self._next_poll[feed.id]
        health = self.store.feed_health(feed.id)
        delay = next_poll_delay(feed.interval_seconds, health)
        if health.last_failure is None or delay <= feed.interval_seconds:
            return None
        return health.last_failure + timedelta(seconds=delay)

    def close(self) -> None:
        self.store.close()
        for fetcher in self.owned_fetchers:
            fetcher.close()


def build_app(
    env: Environment,
    *,
    stdout: IO[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    fetcher: Fetcher | None = None,
    now: Callable[[], datetime] = utc_now,
    listening: bool = False,
    guarded_fetcher: AddressGuardedFetcher | None = None,
) -> App:
    """Raises ConfigError or BotError with a one-line reason when it cannot start. `listening`: this
    process will hear Slack's button presses (`run`, not `run --once`), so alerts may carry buttons."""
    stamp = rules_stamp(env.rules_path)
    rules = load_rules(env.rules_path)
    store = open_store(env.db_path)
    sink: AlertSink
    client: SlackClient | None = None
    mentions: MentionResolver | None = None
    if env.slack_token:
        client = SlackClient(env.slack_token, env.slack_api_url, sleep=sleep)
        identity: dict[str, Any] | None = None
        try:
            identity = check_auth(client)
            log.info("slack connected team=%s bot=%s", identity.get("team"), identity.get("user"))
        except DeliveryError as e:
            if not e.transient:
                raise BotError(
                    f"Slack refused SLACK_BOT_TOKEN ({e.error}): check the token and the app install"
                ) from e
            log.warning(
                "slack unreachable at start error=%s (alerts wait as pending until it answers)", e.error
            )
        rules = resolve_rules(rules, client, store)
        if store.is_blank():
            bot_id = identity.get("bot_id") if identity else None
            recover_state(client, rules, store, now(), bot_id=str(bot_id) if bot_id else None)
        mentions = MentionResolver(client)
        try:
            problems = check_mentions(rules, mentions)
        except DeliveryError as e:
            if not e.transient:  # Slack answered, and refused: a missing scope is the operator's to fix
                store.close()
                raise BotError(
                    f"cannot check on-call mentions: Slack said {e.error} "
                    "(the app needs the usergroups:read scope: see manifest.yml, then reinstall)"
                ) from e
            log.warning(
                "cannot check on-call mentions now error=%s (unknown ones are logged when used)", e.error
            )
        else:
            if problems:
                store.close()
                raise ConfigError(problems)
        sink = SlackSink(client, interactive=env.interactive and listening, mentions=mentions)
        console = False
    else:
        sink = ConsoleSink(stdout)
        console = True
        if env.signing_secret or env.app_token:
            log.warning(
                "SLACK_SIGNING_SECRET or SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not: "
                "the Slack app is off and alerts are printed"
            )
        log.info("console mode: SLACK_BOT_TOKEN is not set, alerts are printed instead of posted")
    owned: list[HttpFetcher | GuardedFetcher] = []
    if fetcher is None:
        fetcher = HttpFetcher()
        owned.append(fetcher)
    if guarded_fetcher is None:
        guarded_fetcher = GuardedFetcher()
        owned.append(guarded_fetcher)
    directory = ChannelDirectory(client) if client is not None else None
    pipeline = Pipeline(
        merge_rules(
            rules,
            store.subscriptions(),
            store.added_feeds(),
            directory,
        ),
        store=store,
        fetcher=fetcher,
        sink=sink,
        now=now,
        guarded_fetcher=guarded_fetcher,
    )
    return App(
        file_rules=rules,
        store=store,
        pipeline=pipeline,
        console=console,
        client=client,
        mentions=mentions,
        rules_path=env.rules_path,
        loaded_stamp=stamp,
        started=now(),
        owned_fetchers=tuple(owned),
        directory=directory,
        _merged_at=directory.clock() if directory is not None else 0.0,
    )


class Stoppable(Protocol):
    def stop(self) -> None: ...


def sync_feed_jobs(scheduler: BackgroundScheduler, app: App, start: datetime) -> None:
    """One job per feed of the current rules: new feeds polled at once, removed ones dropped, changed
    intervals rescheduled. Called from the main thread or a slash command's, never from inside a job
    (changing jobs from inside a job deadlocks the scheduler's shutdown)."""
    wanted = {f"feed:{feed.id}": feed for feed in app.rules.feeds}
    for job in scheduler.get_jobs():
        if job.id.startswith("feed:") and job.id not in wanted:
            scheduler.remove_job(job.id)
    for job_id, feed in wanted.items():
        trigger = IntervalTrigger(seconds=feed.interval_seconds, timezone="UTC")
        job = scheduler.get_job(job_id)
        if job is None:
            scheduler.add_job(
                app.poll_feed_when_due,
                trigger,
                args=[feed.id],
                id=job_id,
                next_run_time=start,
                misfire_grace_time=max(feed.interval_seconds, 30),
            )
        elif job.trigger.interval != trigger.interval:
            scheduler.reschedule_job(job_id, trigger=trigger)


def run_scheduler(
    app: App,
    stop: threading.Event | None = None,
    *,
    serve: Callable[[Callable[[], None]], Stoppable] | None = None,
    rules_check_seconds: float = RULES_CHECK_SECONDS,
) -> None:
    """Polls every feed at its interval until SIGTERM/SIGINT (or `stop`), then lets running polls finish
    and flushes state. One job per feed: no overlapping runs, missed runs coalesced into one. `serve`
    starts what listens beside it (health, the Slack app), given a function that delivers held alerts
    now; the rules file is checked for changes every few seconds."""
    stop = stop or threading.Event()
    scheduler = BackgroundScheduler(
        # Feed polls share a bounded pool (a change of its size takes a restart); the pending, tick and
        # prune jobs have their own, so 500 feeds falling due together never hold up an escalation.
        executors={
            "default": ThreadPoolExecutor(max_workers=app.rules.settings.poll_concurrency),
            "housekeeping": ThreadPoolExecutor(max_workers=2),
        },
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone="UTC",
    )

    start = utc_now()
    jobs_lock = threading.Lock()  # the rules-file watcher and slash commands both resync

    def resync_jobs() -> None:
        with jobs_lock:
            sync_feed_jobs(scheduler, app, utc_now())

    with jobs_lock:
        sync_feed_jobs(scheduler, app, start)
    app.resync_jobs = resync_jobs
    scheduler.add_job(
        app.retry_pending,
        IntervalTrigger(seconds=PENDING_RETRY_SECONDS, timezone="UTC"),
        id="pending",
        executor="housekeeping",
        next_run_time=start + timedelta(seconds=5),
        misfire_grace_time=PENDING_RETRY_SECONDS,
    )
    scheduler.add_job(
        app.safe_tick,
        IntervalTrigger(seconds=TICK_SECONDS, timezone="UTC"),
        id="tick",
        executor="housekeeping",
        next_run_time=start + timedelta(seconds=1),
    )
    scheduler.add_job(
        app.prune_archive,
        IntervalTrigger(seconds=ARCHIVE_PRUNE_SECONDS, timezone="UTC"),
        id="prune",
        executor="housekeeping",
        next_run_time=start + timedelta(seconds=60),
    )

    def deliver_held_now() -> None:
        # A one-off run of the pending job, so a resumed channel gets its alerts at once.
        scheduler.add_job(app.retry_pending, id="pending-now", replace_existing=True, executor="housekeeping")

    # The signal handler runs on the main thread between two bytecodes, perhaps while that thread holds
    # `stop`'s own lock (inside stop.wait) or is writing a log line: setting the event or logging there can
    # deadlock or fail. It only notes the signal; the loop below, waking often, acts on it.
    signals: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        if signals:
            # Asked twice: stop now. Each poll's state is written atomically, so the poll in flight is
            # redone at the next start: alerts it posted are in the outbox, and a post cut off mid-request
            # was marked there beforehand, so the next start looks for it in the channel first.
            os.write(2, b"second signal: exiting without waiting for running polls\n")
            os._exit(1)
        signals.append(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    scheduler.start()
    log.info(
        "running feeds=%d channels=%d", len(app.rules.feeds), len({r.channel for r in app.rules.channels})
    )
    serving: Stoppable | None = None
    try:
        serving = serve(deliver_held_now) if serve is not None else None
        next_rules_check = time.monotonic() + rules_check_seconds
        while not stop.wait(timeout=min(SIGNAL_CHECK_SECONDS, rules_check_seconds)):
            if signals:
                log.info(
                    "stopping signal=%s (finishing running polls, then saving state)",
                    signal.Signals(signals[0]).name,
                )
                break
            if time.monotonic() < next_rules_check:
                continue
            next_rules_check = time.monotonic() + rules_check_seconds
            if app.reload_rules_if_changed():
                resync_jobs()
            else:
                app.refresh_personal_watches_if_due()
    finally:
        app.resync_jobs = None
        app.pipeline.stop_delivering()
        if serving is not None:
            serving.stop()
        scheduler.shutdown(wait=True)
        app.close()
        log.info("stopped; state saved")
