"""bot.health: what a poll's outcome does to a feed's health, and when the feed is polled next. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.health import (
    FAILING,
    HEALTHY,
    RECOVERED,
    FeedHealth,
    health_after_notices,
    health_after_poll,
    health_from_doc,
    health_to_doc,
    host_delay,
    is_every_feed_failing,
    next_poll_delay,
)
from bot.home import FeedStatus, feed_line
from bot.notices import render_feed_notice

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=2)


def test_failures_count_up_from_the_first_and_a_good_poll_clears_them() -> None:
    once = health_after_poll(HEALTHY, now=T0, error="HTTP 503 Service Unavailable")
    assert once == FeedHealth(1, T0, T0, "HTTP 503 Service Unavailable")
    twice = health_after_poll(once, now=T1, error="read timeout after 30s")
    assert twice == FeedHealth(2, T0, T1, "read timeout after 30s")  # failing since the first
    assert health_after_poll(twice, now=T1, error=None) == HEALTHY


def test_410_marks_a_feed_gone_until_its_host_answers_otherwise() -> None:
    gone = health_after_poll(HEALTHY, now=T0, error="HTTP 410 Gone", http_status=410)
    assert gone.gone_since == T0 and gone.failures == 1
    still = health_after_poll(gone, now=T1, error="HTTP 410 Gone", http_status=410)
    assert still.gone_since == T0 and still.failures == 2  # gone since the first 410
    assert health_after_poll(still, now=T1, error="HTTP 503", http_status=503).gone_since is None
    assert health_after_poll(still, now=T1, error=None) == HEALTHY


def test_a_gone_feed_is_polled_once_a_day_or_at_its_interval_when_longer() -> None:
    gone = FeedHealth(failures=9, last_failure=T0, gone_since=T0)
    assert next_poll_delay(120, gone) == 86400
    assert next_poll_delay(120, gone, host_seconds=600) == 86400
    assert next_poll_delay(2 * 86400, gone) == 2 * 86400


@pytest.mark.parametrize(
    ("interval", "failures", "host", "delay"),
    [
        (120, 0, None, 120),
        (120, 3, None, 480),  # backoff: the interval, doubling per failure...
        (120, 10, None, 3600),  # ...up to an hour
        (7200, 3, None, 7200),  # or the interval, when longer
        (120, 1, 600, 600),  # the host asks for more: honoured
        (120, 1, 86400, 900),  # ...up to 15 minutes
        (120, 5, 60, 1920),  # the host asks for less than the backoff: the backoff wins
        (1800, 1, 86400, 1800),  # never sooner than the feed's own interval
        (120, 0, 0, 120),
    ],
)
def test_next_poll_delay(interval: int, failures: int, host: float | None, delay: float) -> None:
    health = FeedHealth(failures=failures, last_failure=T0) if failures else HEALTHY
    assert next_poll_delay(interval, health, host) == delay


@pytest.mark.parametrize(
    ("failed", "http_status", "retry_after", "max_age", "asked"),
    [
        (True, 429, 120, None, 120),
        (True, 503, 120, None, 120),
        (True, 500, 120, None, None),  # Retry-After means something on 429 and 503 only
        (True, 404, 120, None, None),
        (True, None, None, None, None),  # a timeout: the host asked nothing
        (False, None, None, 600, 600),  # a good answer: its max-age
        (False, None, 120, None, None),
        (False, None, None, None, None),
    ],
)
def test_what_the_feed_host_asked_for(
    failed: bool,
    http_status: int | None,
    retry_after: float | None,
    max_age: float | None,
    asked: float | None,
) -> None:
    assert (
        host_delay(failed=failed, http_status=http_status, retry_after=retry_after, max_age=max_age) == asked
    )


def test_the_bot_is_failing_only_when_no_feed_works() -> None:
    failing = FeedHealth(failures=1, last_failure=T0)
    gone = FeedHealth(failures=1, last_failure=T0, gone_since=T0)
    assert is_every_feed_failing([failing, failing])
    assert is_every_feed_failing([failing, gone])
    assert is_every_feed_failing([gone])
    assert not is_every_feed_failing([gone, HEALTHY])  # a gone feed beside a working one: still healthy
    assert not is_every_feed_failing([failing, HEALTHY])
    assert not is_every_feed_failing([])


def test_health_round_trips_through_a_document() -> None:
    health = FeedHealth(4, T0, T1, "HTTP 410 Gone", gone_since=T0)
    assert health_from_doc(health_to_doc(health)) == health
    assert health_from_doc(None) == HEALTHY


def status(**changes: object) -> FeedStatus:
    base = FeedStatus(
        id="scmp",
        url="https://e.com/rss",
        last_poll=T1,
        last_status="ok",
        last_error=None,
        consecutive_failures=0,
        items_seen=50,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("feed", "shown"),
    [
        (status(last_poll=None, items_seen=0), "⏳ not polled yet"),
        (status(), "🟢 ok"),
        (
            status(consecutive_failures=3, failing_since=T0, last_error="HTTP 503 <b>"),
            "🔴 failing since <!date^1780304400^{date_short_pretty} {time}|2026-06-01 09:00 UTC> "
            "(3 in a row): `HTTP 503 &lt;b&gt;`",
        ),
        (
            status(consecutive_failures=2, failing_since=T0, gone_since=T0, last_error="HTTP 410 Gone"),
            "⚫ gone since <!date^1780304400^{date_short_pretty} {time}|2026-06-01 09:00 UTC> "
            "(its host answers 410 Gone): checked once a day",
        ),
    ],
    ids=["new", "ok", "failing", "gone"],
)
def test_app_home_shows_each_feeds_health(feed: FeedStatus, shown: str) -> None:
    assert feed_line(feed).startswith(f"*scmp* · {shown}\n")


# -- notices ---------------------------------------------------------------------------------------------


def failed(health: FeedHealth, times: int, **kwargs: object) -> FeedHealth:
    for n in range(times):
        health = health_after_poll(
            health,
            now=T0 + timedelta(minutes=2 * n),
            error="HTTP 503 Service Unavailable",
            notice_after=3,
            following=("C1", "C2"),
            **kwargs,  # type: ignore[arg-type]
        )
    return health


def worked(health: FeedHealth, following: tuple[str, ...] = ("C1", "C2")) -> FeedHealth:
    return health_after_poll(health, now=T1, error=None, notice_after=3, following=following)


def test_the_failing_notice_is_due_once_at_the_threshold_and_the_recovery_to_those_told() -> None:
    assert failed(HEALTHY, 2).notice is None
    due = failed(HEALTHY, 3)
    assert (due.notice, due.owed, due.told) == (FAILING, ("C1", "C2"), ())
    told = health_after_notices(due, ["C1", "C2"], ("C1", "C2"))
    assert (told.owed, told.told) == ((), ("C1", "C2"))
    assert failed(told, 5).owed == ()  # never due again in this run of failures
    recovered = worked(failed(told, 5))
    assert (recovered.notice, recovered.owed, recovered.failures) == (RECOVERED, ("C1", "C2"), 0)
    assert worked(recovered) == recovered  # owed until it is sent
    assert health_after_notices(recovered, ["C1", "C2"], ("C1", "C2")) == HEALTHY


def test_a_feed_that_recovers_before_the_threshold_tells_nobody() -> None:
    assert worked(failed(HEALTHY, 2)) == HEALTHY


def test_a_gone_feed_is_noticed_at_once() -> None:
    gone = failed(HEALTHY, 1, http_status=410)
    assert (gone.notice, gone.owed) == (FAILING, ("C1", "C2"))


def test_a_notice_slack_refused_stays_owed_unless_the_channel_left() -> None:
    due = failed(HEALTHY, 3)
    partly = health_after_notices(due, ["C1"], ("C1", "C2"))
    assert (partly.owed, partly.told) == (("C2",), ("C1",))
    assert health_after_notices(partly, [], ("C1",)).owed == ()  # C2 no longer follows the feed
    assert worked(partly).owed == ("C1",)  # only a channel told it failed hears it recovered


def test_a_failure_before_the_recovery_notice_went_out_is_not_noticed_twice() -> None:
    told = health_after_notices(failed(HEALTHY, 3), ["C1"], ("C1", "C2"))
    recovering = worked(told)  # the recovery notice is owed to C1, not sent yet...
    again = failed(recovering, 3)  # ...when it fails again
    assert (again.told, again.owed) == (("C1",), ("C2",))  # C1 still thinks it fails: only C2 is told
    assert worked(health_after_notices(again, ["C2"], ("C1", "C2"))).owed == ("C1", "C2")


@pytest.mark.parametrize(
    ("health", "text"),
    [
        (
            FeedHealth(10, T0, T1, "HTTP 503 <Service Unavailable>", notice=FAILING),
            "⚠️ Feed *scmp* has failed 10 polls in a row since 2026-06-01 09:00 UTC: "
            "`HTTP 503 &lt;Service Unavailable&gt;`. No alerts come from it meanwhile; "
            "I will say so when it works again.",
        ),
        (
            FeedHealth(1, T0, T0, "HTTP 410 Gone", gone_since=T0, notice=FAILING),
            "⚠️ Feed *scmp* is gone: since 2026-06-01 09:00 UTC its host answers 410 Gone. I will check it "
            "once a day and say so if it comes back; if it is gone for good, remove it from the rules.",
        ),
        (
            FeedHealth(failing_since=T0, notice=RECOVERED, owed=("C1",)),
            "✅ Feed *scmp* works again (it had been failing since 2026-06-01 09:00 UTC). "
            "Its alerts are back.",
        ),
    ],
    ids=["failing", "gone", "recovered"],
)
def test_the_notice_is_one_short_plain_message(health: FeedHealth, text: str) -> None:
    assert render_feed_notice("scmp", health) == text
