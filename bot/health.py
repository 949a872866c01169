"""A feed's health across polls and restarts: its failures in a row, since when, and when to poll it next.
Pure: a poll's outcome and the old health in, the new health out; the App stores it (bot.store) and acts on
it. Nothing here does I/O or knows the scheduler.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

# What a feed host asks for (Retry-After, Cache-Control max-age) is honoured up to this: a host that says
# "fresh for a day" must not hold a newsroom's alerts back for a day.
MAX_HOST_DELAY_SECONDS = 15 * 60
# A feed whose host answered 410 Gone is polled this often, in case it comes back (a site relaunched, a
# mistake undone), instead of at its interval: its host has said there is nothing there.
GONE_RECHECK_SECONDS = 24 * 3600
FAILING = "failing"  # the notice that a feed has failed settings.feed_failure_notice_after polls in a row
RECOVERED = "recovered"  # the notice that it works again, to the channels that were told it failed


@dataclass(frozen=True)
class FeedHealth:
    """What the bot remembers of a feed's recent polls, kept in the store so a restart knows it too."""

    failures: int = 0  # failed polls in a row; 0 when the last poll worked
    failing_since: datetime | None = None  # the first failed poll of this run of failures
    last_failure: datetime | None = None  # the latest failed poll: backoff counts from it
    last_error: str | None = None  # its kind, as shown outside the logs (bot.errors.shown_failure)
    gone_since: datetime | None = None  # its host has answered 410 Gone since then, every time
    # The channels following the feed hear once that it fails and once that it recovers, never more, a
    # restart included: hence the notice and who has had it are kept here, with the rest of the health.
    notice: str | None = None  # FAILING or RECOVERED, once that notice is due
    owed: tuple[str, ...] = ()  # channels still to be sent `notice` (a post Slack refused is tried again)
    told: tuple[str, ...] = ()  # channels sent the FAILING notice: they hear of the recovery


HEALTHY = FeedHealth()


def health_after_poll(
    health: FeedHealth,
    *,
    now: datetime,
    error: str | None,
    http_status: int | None = None,
    notice_after: int = 10,
    following: Sequence[str] = (),
) -> FeedHealth:
    """The feed's health once a poll has ended, with `error` (None: it worked) and the HTTP status the
    feed host answered with, if any. A 410 marks the feed gone; any other answer ends that.

    The failing notice is due to every channel `following` the feed at its `notice_after`-th failure in a
    row, or at once when it is gone (checked daily, it would take days to get there); the recovery notice
    is due to the channels that were told."""
    if error is None:
        if health.failures == 0:
            return health  # still healthy (perhaps still owing channels the recovery notice)
        if not health.told:
            return HEALTHY
        return FeedHealth(
            failing_since=health.failing_since,
            last_error=health.last_error,
            notice=RECOVERED,
            owed=health.told,
        )
    if health.failures == 0:
        # A new run of failures. Channels still owed the last recovery notice never heard that the feed
        # worked again: for them this is the same failure, so they are not told about it a second time.
        health = FeedHealth(told=health.owed if health.notice == RECOVERED else ())
    failures = health.failures + 1
    gone_since = (health.gone_since or now) if http_status == 410 else None
    notice, owed = health.notice, health.owed
    if notice != FAILING and (failures >= notice_after or gone_since is not None):
        notice, owed = FAILING, tuple(channel for channel in following if channel not in health.told)
    return FeedHealth(
        failures=failures,
        failing_since=health.failing_since or now,
        last_failure=now,
        last_error=error,
        gone_since=gone_since,
        notice=notice,
        owed=owed,
        told=health.told,
    )


def health_after_notices(health: FeedHealth, sent: Collection[str], following: Collection[str]) -> FeedHealth:
    """Once the owed notice went to the channels in `sent`: the others are tried again at the next poll,
    unless they no longer follow the feed."""
    owed = tuple(channel for channel in health.owed if channel not in sent and channel in following)
    if health.notice == FAILING:
        told = health.told + tuple(channel for channel in health.owed if channel in sent)
        return replace(health, owed=owed, told=told)
    return replace(health, owed=owed) if owed else HEALTHY


def feed_backoff(interval_seconds: int, consecutive_failures: int) -> float:
    """Seconds until a failing feed is tried again: the interval, doubling per failure, capped at an hour
    (or the interval itself when that is longer)."""
    if consecutive_failures <= 0:
        return float(interval_seconds)
    cap = max(interval_seconds, 3600)
    return float(min(interval_seconds * 2 ** (consecutive_failures - 1), cap))


def host_delay(
    *, failed: bool, http_status: int | None, retry_after: float | None, max_age: float | None
) -> float | None:
    """How long the feed host asked not to be polled: Retry-After on a 429 or 503 (the answers it is
    meant for), the answer's Cache-Control max-age on a good one. None when it asked nothing."""
    if failed:
        return retry_after if http_status in (429, 503) else None
    return max_age


def next_poll_delay(interval_seconds: int, health: FeedHealth, host_seconds: float | None = None) -> float:
    """Seconds from a poll to the next poll of its feed: the interval, or the backoff of a failing feed, or
    a day for a gone one; and no sooner than the feed host asked (`host_seconds`), though never more than
    15 minutes for that."""
    if health.gone_since is not None:
        return float(max(GONE_RECHECK_SECONDS, interval_seconds))
    delay = feed_backoff(interval_seconds, health.failures)
    if host_seconds:
        delay = max(delay, min(host_seconds, MAX_HOST_DELAY_SECONDS))
    return delay


def is_every_feed_failing(healths: Sequence[FeedHealth]) -> bool:
    """The bot as a whole is failing (/healthz answers 503) when it has feeds and none of them works: each
    is failing or gone. A gone feed beside working ones is the rules' problem, not the bot's: it is shown
    as gone, and the bot stays healthy."""
    return bool(healths) and all(health.failures or health.gone_since for health in healths)


# -- in the store --------------------------------------------------------------------------------------------


def health_to_doc(health: FeedHealth) -> dict[str, Any]:
    return {
        "failures": health.failures,
        "failing_since": _iso(health.failing_since),
        "last_failure": _iso(health.last_failure),
        "last_error": health.last_error,
        "gone_since": _iso(health.gone_since),
        "notice": health.notice,
        "owed": list(health.owed),
        "told": list(health.told),
    }


def health_from_doc(doc: dict[str, Any] | None) -> FeedHealth:
    if not doc:
        return HEALTHY
    return FeedHealth(
        failures=int(doc.get("failures", 0)),
        failing_since=_time(doc.get("failing_since")),
        last_failure=_time(doc.get("last_failure")),
        last_error=doc.get("last_error"),
        gone_since=_time(doc.get("gone_since")),
        notice=doc.get("notice"),
        owed=tuple(doc.get("owed", ())),
        told=tuple(doc.get("told", ())),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
