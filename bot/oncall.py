"""On-call paging, pure: the policy an alert gets from the rules that matched it, and what the timers owe
at a given moment. Timers are data (open alerts in the store), evaluated by `due_escalations(state, now)`
from one ticker job, so they survive restarts and tests pass a clock instead of waiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot.model import PRIORITIES, ChannelMatch, DailyWindow, Escalation, Item

SPECIAL_MENTIONS = {"@here": "<!here>", "@channel": "<!channel>"}
ESCALATION_EVENT_TYPE = "feed_alert_escalation"  # an escalation reply's metadata: the alert and the step


@dataclass(frozen=True)
class AlertPolicy:
    """How one alert pages: merged from every rule of the channel that matched it."""

    priority: str = "normal"
    mentions: tuple[str, ...] = ()  # as written in the rules, in rule order, without repeats
    ack: bool = False
    escalate: Escalation | None = None

    @property
    def high(self) -> bool:
        return self.priority == "high"


def policy_of(match: ChannelMatch) -> AlertPolicy:
    """The highest priority of the matched rules, every mention, an ack button if any rule asks, and the
    escalation of the highest-priority rule that has one."""
    rules = [rule for rule in match.rules]
    if not rules:
        return AlertPolicy()
    priority = max((rule.oncall.priority for rule in rules), key=PRIORITIES.index)
    mentions = tuple(dict.fromkeys(rule.oncall.mention for rule in rules if rule.oncall.mention))
    escalating = sorted((rule for rule in rules if rule.oncall.escalate), key=lambda rule: -rule.oncall.rank)
    return AlertPolicy(
        priority=priority,
        mentions=mentions,
        ack=any(rule.oncall.ack for rule in rules),
        escalate=escalating[0].oncall.escalate if escalating else None,
    )


@dataclass(frozen=True)
class OpenAlert:
    """A posted alert that waits for an acknowledgement (and may escalate meanwhile)."""

    id: str
    channel: str
    ts: str  # the Slack message, for chat.update and threaded escalations
    item: Item
    keywords: tuple[str, ...]
    source: str
    policy: AlertPolicy
    posted_at: datetime
    escalations_sent: int = 0
    escalation_attempt: int = 0  # the step last tried: when above escalations_sent, look in the thread first
    acked_by: str | None = None
    acked_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.acked_by is None

    def next_escalation(self) -> datetime | None:
        escalate = self.policy.escalate
        if not self.open or escalate is None or self.escalations_sent >= escalate.repeat:
            return None
        return self.posted_at + timedelta(seconds=escalate.after_seconds * (self.escalations_sent + 1))


@dataclass(frozen=True)
class EscalationDue:
    alert: OpenAlert
    step: int  # 1-based: the escalation this reply is (after a long downtime, the latest one overdue)


def due_escalations(alerts: Iterable[OpenAlert], now: datetime) -> list[EscalationDue]:
    """One reply per unacknowledged alert whose next escalation is due. After a restart several steps may
    be overdue: they fire once, as the latest step, not once per missed interval."""
    due = []
    for alert in alerts:
        escalate = alert.policy.escalate
        first = alert.next_escalation()
        if escalate is None or first is None or first > now:
            continue
        elapsed_steps = int((now - alert.posted_at).total_seconds() // escalate.after_seconds)
        due.append(EscalationDue(alert, min(escalate.repeat, elapsed_steps)))
    return sorted(due, key=lambda d: d.alert.posted_at)


def describe_age(since: datetime, now: datetime) -> str:
    minutes = int((now - since).total_seconds() // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d"


def alert_to_doc(alert: OpenAlert) -> dict[str, Any]:
    escalate = alert.policy.escalate
    return {
        "id": alert.id,
        "channel": alert.channel,
        "ts": alert.ts,
        "item": alert.item.to_dict(),
        "keywords": list(alert.keywords),
        "source": alert.source,
        "priority": alert.policy.priority,
        "mentions": list(alert.policy.mentions),
        "escalate": (
            {"after": escalate.after_seconds, "to": escalate.to, "repeat": escalate.repeat}
            if escalate
            else None
        ),
        "posted_at": alert.posted_at.isoformat(),
        "escalations_sent": alert.escalations_sent,
        "escalation_attempt": alert.escalation_attempt,
        "acked_by": alert.acked_by,
        "acked_at": alert.acked_at.isoformat() if alert.acked_at else None,
    }


def alert_from_doc(doc: dict[str, Any]) -> OpenAlert:
    escalate = doc.get("escalate")
    return OpenAlert(
        id=doc["id"],
        channel=doc["channel"],
        ts=doc["ts"],
        item=Item.from_dict(doc["item"]),
        keywords=tuple(doc.get("keywords", ())),
        source=doc.get("source", ""),
        policy=AlertPolicy(
            priority=doc.get("priority", "normal"),
            mentions=tuple(doc.get("mentions", ())),
            ack=True,
            escalate=Escalation(escalate["after"], escalate["to"], escalate["repeat"]) if escalate else None,
        ),
        posted_at=datetime.fromisoformat(doc["posted_at"]),
        escalations_sent=doc.get("escalations_sent", 0),
        escalation_attempt=doc.get("escalation_attempt", 0),
        acked_by=doc.get("acked_by"),
        acked_at=datetime.fromisoformat(doc["acked_at"]) if doc.get("acked_at") else None,
    )


# -- quiet hours, digests and flood control: when an alert goes out ------------------------------------


def _local(now: datetime, tz: str) -> datetime:
    return now.astimezone(ZoneInfo(tz))


def in_window(window: DailyWindow, now: datetime) -> bool:
    """Whether `now` falls in the daily window (which may cross midnight)."""
    local = _local(now, window.tz).time().replace(tzinfo=None)
    if window.start < window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end


def next_daily(at: time, tz: str, now: datetime) -> datetime:
    """The next moment after `now` when the local clock in `tz` shows `at`, once per day. Compared in UTC,
    so a repeated hour in autumn never makes it fire early."""
    zone = ZoneInfo(tz)
    today = now.astimezone(zone).date()
    # One moment per local date (fold=0): the first of a repeated wall time, and for one that does not
    # exist (the spring gap) the moment the clock shows it after springing forward.
    candidates = [
        datetime.combine(today + timedelta(days=offset), at, tzinfo=zone).astimezone(UTC)
        for offset in (-1, 0, 1, 2)
    ]
    return min(candidate for candidate in candidates if candidate > now)


@dataclass(frozen=True)
class Route:
    """Where one alert goes: posted now, or queued to go out in a grouped message at `release_at`."""

    kind: str  # now | digest | quiet | flood
    release_at: datetime | None = None


POST_NOW = Route("now")


def route(match: ChannelMatch, now: datetime, *, posted_this_cycle: int, max_per_cycle: int) -> Route:
    """Pure. High priority always goes out at once. Otherwise, when every rule that matched asks for a
    digest, the alert waits for it; during quiet hours (of every rule that matched) it waits for their
    end; and past `max_per_cycle` alerts to the channel in one poll, it joins one grouped message."""
    policy = policy_of(match)
    rules = match.rules
    if policy.high or not rules:
        return POST_NOW
    digests = [rule.oncall.digest for rule in rules]
    if all(digests):
        return Route("digest", min(next_daily(d.at, d.tz, now) for d in digests if d))
    windows = [rule.oncall.quiet_hours for rule in rules]
    if all(w is not None and in_window(w, now) for w in windows):
        ends = [next_daily(w.end, w.tz, now) for w in windows if w]
        return Route("quiet", max(ends))
    if posted_this_cycle >= max_per_cycle:
        return Route("flood", now)
    return POST_NOW


@dataclass(frozen=True)
class QueuedAlert:
    """A match waiting to go out in a grouped message (a digest, the end of quiet hours, a flood)."""

    id: str
    match: ChannelMatch
    source: str
    kind: str
    queued_at: datetime
    release_at: datetime
    group: str | None = None  # set (and saved) just before its grouped message is posted; a retry reposts it


GroupKey = tuple[str, str, datetime]  # channel, kind, release time


def due_groups(queued: Iterable[QueuedAlert], now: datetime) -> dict[GroupKey, list[QueuedAlert]]:
    """The queued alerts that are due, one group per (channel, kind, release time): a digest waits for
    its own time however busy the channel is otherwise. Oldest first (by publication, else when queued;
    the key breaks ties)."""
    groups: dict[GroupKey, list[QueuedAlert]] = {}
    for alert in queued:
        if alert.release_at <= now:
            groups.setdefault((alert.match.channel, alert.kind, alert.release_at), []).append(alert)
    return {
        key: sorted(alerts, key=lambda a: (a.match.item.published or a.queued_at, a.queued_at, a.id))
        for key, alerts in sorted(groups.items(), key=lambda entry: entry[0][2])
    }
