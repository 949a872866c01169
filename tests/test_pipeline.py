"""The pure decisions of a poll, and the pipeline over in-memory ports (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.addresses import AddressPolicy
from bot.errors import DeliveryError, FetchError
from bot.health import feed_backoff
from bot.model import (
    AddedFeed,
    ChannelMatch,
    ChannelRule,
    FeedConfig,
    FetchResult,
    Item,
    RuleSet,
    Settings,
    Subscription,
)
from bot.pipeline import Pipeline, newest_first, next_pending_attempt, plan_alerts
from bot.rules import RuleMatcher
from bot.store import MemoryBackend, Store
from tests.conftest import Clock, rss_item, scmp_feed

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def item(key: str, title: str, hours_ago: float | None = None) -> Item:
    published = T0 - timedelta(hours=hours_ago) if hours_ago is not None else None
    return Item(feed_id="f", key=key, link=f"https://e.com/{key}", title=title, published=published)


MATCHER = RuleMatcher(
    (ChannelRule("C1", ("Nexperia",)), ChannelRule("C2", ("Huawei",)), ChannelRule("C2", ("Nexperia",)))
)
ITEMS = [
    item("a", "Nexperia one", 1),
    item("b", "Nexperia two", 3),
    item("c", "Huawei three", 2),
    item("d", "Nothing", 0),
    item("e", "Nexperia undated"),
]


def never(_channel: str, _item: Item) -> bool:
    return False


def test_first_poll_keeps_each_channels_newest_matches_up_to_backfill() -> None:
    plan = plan_alerts(ITEMS, MATCHER, first_poll=True, backfill=1, is_delivered=never)
    assert [(m.channel, m.item.key) for m in plan.alerts] == [("C1", "a"), ("C2", "a")]
    assert {(s.match.channel, s.match.item.key) for s in plan.suppressed} == {
        ("C1", "b"),
        ("C1", "e"),
        ("C2", "b"),
        ("C2", "c"),
        ("C2", "e"),
    }


def test_a_topic_added_from_slack_gets_no_backfill_even_on_a_feeds_first_poll() -> None:
    added = Subscription("C3", "Huawei", None, "U1", T0)
    matcher = RuleMatcher(
        (ChannelRule("C1", ("Nexperia",)), ChannelRule("C3", ("Huawei",), subscription=added))
    )
    plan = plan_alerts(ITEMS, matcher, first_poll=True, backfill=5, is_delivered=never)
    assert {m.channel for m in plan.alerts} == {"C1"}
    assert [s.reason for s in plan.suppressed if s.match.channel == "C3"] == [
        "first poll: topics added from Slack start from new items"
    ]


def test_backfill_zero_marks_everything_seen_and_posts_nothing() -> None:
    assert plan_alerts(ITEMS, MATCHER, first_poll=True, backfill=0, is_delivered=never).alerts == ()


def test_later_polls_post_every_new_match_oldest_first() -> None:
    plan = plan_alerts(ITEMS, MATCHER, first_poll=False, backfill=1, is_delivered=never)
    assert [(m.channel, m.item.key) for m in plan.alerts] == [
        ("C1", "e"),
        ("C2", "e"),
        ("C1", "b"),
        ("C2", "b"),
        ("C2", "c"),
        ("C1", "a"),
        ("C2", "a"),
    ]


def test_already_delivered_matches_are_suppressed() -> None:
    plan = plan_alerts(ITEMS, MATCHER, first_poll=False, backfill=1, is_delivered=lambda c, i: c == "C1")
    assert {m.channel for m in plan.alerts} == {"C2"}
    assert {s.reason for s in plan.suppressed} == {"already posted to this channel"}


def test_an_item_matching_two_entries_of_a_channel_is_one_alert_listing_both() -> None:
    matcher = RuleMatcher((ChannelRule("C1", ("Nexperia",)), ChannelRule("C1", ("Wingtech",))))
    plan = plan_alerts(
        [item("a", "Wingtech and Nexperia", 1)], matcher, first_poll=False, backfill=1, is_delivered=never
    )
    assert [(m.channel, m.keywords) for m in plan.alerts] == [("C1", ("Nexperia", "Wingtech"))]


def test_newest_first_puts_undated_items_last_and_keeps_feed_order_for_ties() -> None:
    same = [item("x", "t", 1), item("y", "t", 1), item("z", "t")]
    assert [i.key for i in newest_first([same[2], *same[:2]])] == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("interval", "failures", "delay"),
    [(120, 0, 120), (120, 1, 120), (120, 2, 240), (120, 3, 480), (120, 10, 3600), (7200, 3, 7200)],
)
def test_a_failing_feed_backs_off_growing_to_a_cap(interval: int, failures: int, delay: float) -> None:
    assert feed_backoff(interval, failures) == delay


def test_pending_retries_back_off_and_honour_retry_after() -> None:
    assert next_pending_attempt(1, T0, None) == T0 + timedelta(seconds=30)
    assert next_pending_attempt(3, T0, None) == T0 + timedelta(seconds=120)
    assert next_pending_attempt(20, T0, None) == T0 + timedelta(hours=1)
    assert next_pending_attempt(1, T0, 600) == T0 + timedelta(seconds=600)


class FakeFetcher:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.error: FetchError | None = None

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        redirect_policy: AddressPolicy | None = None,
    ) -> FetchResult:
        if self.error:
            raise self.error
        return FetchResult(not_modified=False, body=self.body)


class RecordingSink:
    def __init__(self) -> None:
        self.delivered: list[ChannelMatch] = []
        self.fail_with: DeliveryError | None = None

    def deliver(self, match: ChannelMatch, source: str, *, since: datetime | None = None) -> None:
        if self.fail_with:
            raise self.fail_with
        self.delivered.append(match)


RULES = RuleSet(
    Settings(interval_seconds=60, backfill=1),
    (FeedConfig("scmp", "http://feeds.invalid/scmp", 60),),
    (ChannelRule("C1", ("Nexperia",)), ChannelRule("C2", ("ruling",))),
)


def make_pipeline(
    backend: MemoryBackend, fetcher: FakeFetcher, sink: RecordingSink, clock: Clock
) -> Pipeline:
    return Pipeline(RULES, store=Store.in_memory(backend), fetcher=fetcher, sink=sink, now=clock)


def test_a_failing_feed_reports_its_reason_and_changes_nothing(clock: Clock) -> None:
    backend, fetcher, sink = MemoryBackend(), FakeFetcher(b""), RecordingSink()
    fetcher.error = FetchError("HTTP 503 Service Unavailable", status=503)
    report = make_pipeline(backend, fetcher, sink, clock).poll_feed(RULES.feeds[0])
    assert (report.status, report.error) == ("error", "HTTP 503 Service Unavailable")
    assert backend.writes == 0


def test_a_channel_error_holds_only_that_channel(clock: Clock) -> None:
    backend, sink = MemoryBackend(), RecordingSink()
    story = rss_item("Nexperia ruling", "https://e.com/story")
    fetcher = FakeFetcher(scmp_feed(drop_newest=3))
    pipeline = make_pipeline(backend, fetcher, sink, clock)
    pipeline.poll_feed(RULES.feeds[0])  # the first poll, with its backfill, is behind us

    class PickySink(RecordingSink):
        def deliver(self, match: ChannelMatch, source: str, *, since: datetime | None = None) -> None:
            if match.channel == "C1":
                raise DeliveryError("C1", "channel_not_found", transient=False)
            super().deliver(match, source, since=since)

    picky = PickySink()
    fetcher.body = scmp_feed(drop_newest=3, extra_items=(story,))
    report = Pipeline(
        RULES, store=Store.in_memory(backend), fetcher=fetcher, sink=picky, now=clock
    ).poll_feed(RULES.feeds[0])
    assert (report.posted, report.pending) == (1, 1)
    assert [m.channel for m in picky.delivered] == ["C2"]
    assert [p.match.channel for p in Store.in_memory(backend).pending()] == ["C1"]


def test_one_write_per_changed_cycle_and_none_when_unchanged(clock: Clock) -> None:
    backend, sink = MemoryBackend(), RecordingSink()
    fetcher = FakeFetcher(scmp_feed(drop_newest=3))
    pipeline = make_pipeline(backend, fetcher, sink, clock)
    pipeline.poll_feed(RULES.feeds[0])
    assert backend.writes == 1
    assert pipeline.poll_feed(RULES.feeds[0]).status == "unchanged"
    assert backend.writes == 1
    fetcher.body = scmp_feed()
    assert pipeline.poll_feed(RULES.feeds[0]).status == "ok"
    assert backend.writes == 2


class RecordingGuardedFetcher:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.policies: list[AddressPolicy] = []

    def fetch(
        self, url: str, *, policy: AddressPolicy, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        self.policies.append(policy)
        return FetchResult(not_modified=False, body=self.body)


@pytest.mark.parametrize("allow_private", [False, True])
def test_a_feed_added_from_slack_goes_through_the_guarded_fetcher(clock: Clock, allow_private: bool) -> None:
    added = FeedConfig("hn", "https://hnrss.org/frontpage", 60, added=AddedFeed("hn", "u", "U1", T0))
    rules = RuleSet(Settings(allow_private_feeds=allow_private), (RULES.feeds[0], added), RULES.channels)
    plain = FakeFetcher(b"<rss>not this one</rss>")
    plain.error = FetchError("the operator's fetcher must not be used for this feed")
    guarded = RecordingGuardedFetcher(scmp_feed())
    pipeline = Pipeline(
        rules,
        store=Store.in_memory(),
        fetcher=plain,
        sink=RecordingSink(),
        now=clock,
        guarded_fetcher=guarded,
    )
    assert pipeline.poll_feed(added).status == "ok"
    assert pipeline.try_feed(added).title == "Semiconductors: Companies - South China Morning Post"
    assert guarded.policies == [AddressPolicy(allow_private=allow_private)] * 2


def test_without_a_guarded_fetcher_a_feed_added_from_slack_is_not_fetched(clock: Clock) -> None:
    added = FeedConfig("hn", "https://hnrss.org/frontpage", 60, added=AddedFeed("hn", "u", "U1", T0))
    fetcher = FakeFetcher(scmp_feed())
    report = make_pipeline(MemoryBackend(), fetcher, RecordingSink(), clock).poll_feed(added)
    assert (report.status, report.error) == (
        "error",
        "feeds added from Slack need the guarded fetcher, and this bot has none",
    )
