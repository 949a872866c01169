"""One feed cannot hold up, break or flood the others (issue 12, items 3 to 5): a feed whose items are slow
to match, an item that makes matching raise (as pyo3's PanicException does, a BaseException), and a feed
that publishes hundreds of matching items at once. Real HTTP on loopback: the feeds come from the feed host,
the alerts go to the Slack Web API stand-in; the clock is injected, and a Slack answer held open stands
for a slow post (nothing sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.app import App, build_app
from bot.config import environment_from
from bot.inflight import InFlight
from bot.intake import GROUPED_PER_POLL, cap_per_channel
from bot.model import ChannelMatch, ChannelRule, FetchResult, Item, Message
from bot.notices import public_feed_link
from bot.pipeline import AlertSink
from bot.rules import RuleMatcher
from tests.conftest import Clock, rss_item
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_architecture import ADAPTER_LIBRARIES, ADAPTER_MODULES, BOT, imported_modules

FLOODED, OTHER = "C0FLOOD01", "C0OTHER01"
MAX_PER_CYCLE = 5  # the default of settings.max_alerts_per_cycle
WAIT = 5.0  # seconds a thread may take before the test calls it held up (it takes milliseconds)


def rss(*items: bytes, title: str = "Wire") -> bytes:
    return (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>'
        + title.encode()
        + b"</title><link>https://news.example/</link>"
        + b"".join(items)
        + b"</channel></rss>"
    )


def story(n: int, words: str = "export controls") -> bytes:
    """The n-th story: a higher n is published later."""
    return rss_item(
        f"Story {n} on {words}",
        f"https://news.example/{words.replace(' ', '-')}/{n}",
        published=f"Mon, 01 Jun 2026 08:{n // 60:02d}:{n % 60:02d} +0000",
    )


def stories(numbers: range) -> list[bytes]:
    return [story(n) for n in reversed(numbers)]  # newest first, as feeds list them


class World:
    """Two feeds, each followed by its own channel: `flood` by FLOODED and `good` by OTHER."""

    def __init__(self, tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> None:
        self.tmp_path, self.feed_host, self.slack, self.clock = tmp_path, feed_host, slack, clock
        slack.add_channel(FLOODED, "flooded")
        slack.add_channel(OTHER, "other")
        self.flood_url = feed_host.serve("/flood", rss(story(0), title="Flood wire"))
        self.good_url = feed_host.serve("/good", rss(story(0, "entity list")))
        (tmp_path / "rules.yaml").write_text(
            f"settings:\n  backfill: 0\nfeeds:\n  - id: flood\n    url: {self.flood_url}\n"
            f"  - id: good\n    url: {self.good_url}\n"
            f"channels:\n  - channel: {FLOODED}\n    feeds: [flood]\n    keywords: [export controls]\n"
            f"  - channel: {OTHER}\n    feeds: [good]\n    keywords: [entity list]\n"
        )
        self.environ = {
            "SLACK_BOT_TOKEN": slack.state.token,
            "SLACK_API_URL": slack.url,
            "BOT_RULES": str(tmp_path / "rules.yaml"),
            "BOT_DB": str(tmp_path / "state.json"),
        }

    @contextmanager
    def start(self) -> Iterator[App]:
        app = build_app(environment_from(self.environ, self.tmp_path), sleep=self.clock.sleep, now=self.clock)
        try:
            yield app
        finally:
            app.close()

    def poll(self, app: App, feed_id: str) -> None:
        feed = app.rules.feed(feed_id)
        assert feed is not None
        app.poll(feed)

    def publish_good_news(self) -> None:
        self.feed_host.serve("/good", rss(story(1, "entity list"), story(0, "entity list")))


@pytest.fixture
def world(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> World:
    return World(tmp_path, feed_host, slack, clock)


def in_thread(work: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def finishes(work: Callable[[], object]) -> bool:
    """Whether `work` completes within WAIT seconds on its own thread (held up behind a lock, it does not)."""
    thread = in_thread(work)
    thread.join(WAIT)
    return not thread.is_alive()


def grouped_items(posts: Sequence[dict]) -> list[str]:
    return [
        entry["item_key"]
        for post in posts
        if post.get("metadata", {}).get("event_type") == "feed_alert_group"
        for entry in post["metadata"]["event_payload"]["items"]
    ]


def single_alerts(posts: Sequence[dict]) -> list[dict]:
    return [p for p in posts if p.get("metadata", {}).get("event_type") == "feed_alert"]


# -- matching happens outside the delivery lock -----------------------------------------------------------


class GatedMatcher:
    """The real matcher, except that matching an item of `feed_id` waits at a gate: an item that is slow
    to match (a long summary under a NEAR query, thousands of rules), without burning the CPU."""

    def __init__(self, rules: Sequence[ChannelRule], feed_id: str, gate: threading.Event) -> None:
        self.inner, self.feed_id, self.gate = RuleMatcher(rules), feed_id, gate
        self.entered = threading.Event()

    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]:
        if item.feed_id == self.feed_id:
            self.entered.set()
            self.gate.wait(WAIT * 2)
        return self.inner.match_item(item, ignore_feed_filter=ignore_feed_filter)


def test_a_feed_whose_items_are_slow_to_match_does_not_delay_another_feeds_alert(world: World) -> None:
    with world.start() as app:
        world.poll(app, "flood")
        world.poll(app, "good")  # both baselined
        gate = threading.Event()
        matchers: list[GatedMatcher] = []

        def gated(rules: Sequence[ChannelRule]) -> GatedMatcher:
            matchers.append(GatedMatcher(rules, "flood", gate))
            return matchers[-1]

        app.pipeline.make_matcher = gated
        app.refresh_rules()
        world.feed_host.serve("/flood", rss(story(1), story(0)))
        world.publish_good_news()
        slow = in_thread(lambda: world.poll(app, "flood"))
        try:
            assert matchers[-1].entered.wait(WAIT)  # the flood feed's poll is matching its new item
            assert finishes(lambda: world.poll(app, "good"))
            assert len(world.slack.posts_to(OTHER)) == 1 and world.slack.posts_to(FLOODED) == []
        finally:
            gate.set()
            slow.join(WAIT)
        assert len(world.slack.posts_to(FLOODED)) == 1  # and the slow one is posted too, once


# -- an item that makes matching raise fails its poll once, never the feed for ever ----------------------


class PanicException(BaseException):
    """As pyo3_runtime.PanicException: a BaseException, not an Exception."""


class PanickingMatcher(RuleMatcher):
    """The real matcher, which panics on any item whose title says "poison"."""

    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]:
        if "poison" in item.title:
            raise PanicException("called `Option::unwrap()` on a `None` value")
        return super().match_item(item, ignore_feed_filter=ignore_feed_filter)


class PanickingOnStory13(RuleMatcher):
    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]:
        if item.key.endswith("/13"):
            raise PanicException("called `Result::unwrap()` on an `Err` value")
        return super().match_item(item, ignore_feed_filter=ignore_feed_filter)


POISON = rss_item(
    "A poison item on export controls",
    "https://news.example/poison",
    published="Mon, 01 Jun 2026 08:30:00 +0000",
)


def test_an_item_that_makes_matching_panic_is_skipped_and_fails_its_feed_once(world: World) -> None:
    with world.start() as app:
        app.pipeline.make_matcher = PanickingMatcher
        app.refresh_rules()
        app.poll_all_once()  # baselines
        world.feed_host.serve("/flood", rss(story(2), POISON, story(1), story(0)))
        world.publish_good_news()
        reports = {report.feed_id: report for report in app.poll_all_once()}
        # The other items of the feed, and the other feed, are posted ...
        assert sorted(p["metadata"]["event_payload"]["item_key"] for p in world.slack.posts_to(FLOODED)) == [
            "https://news.example/export-controls/1",
            "https://news.example/export-controls/2",
        ]
        assert len(world.slack.posts_to(OTHER)) == 1
        # ... and the feed's health (its kind only, as /healthz shows it), its report (naming the item, for
        # the log line) and /metrics record the failure.
        health = app.store.feed_health("flood")
        assert health.failures == 1
        assert health.last_error == "an item could not be matched"
        item_error = reports["flood"].item_error
        assert item_error is not None
        assert "https://news.example/poison" in item_error and "PanicException" in item_error
        assert reports["flood"].failed_items == 1
        assert app.metrics.registry.get_sample_value("feedwatch_items_failed_total", {"feed": "flood"}) == 1
        assert app.store.feed_health("good").failures == 0
    # After a restart, the next poll passes the item by (it is seen): the feed works again.
    world.feed_host.serve("/flood", rss(story(3), story(2), POISON, story(1), story(0)))
    with world.start() as app:
        app.pipeline.make_matcher = PanickingMatcher
        app.refresh_rules()
        [report] = [r for r in app.poll_all_once() if r.feed_id == "flood"]
        assert report.status == "ok" and report.failed_items == 0
        assert app.store.feed_health("flood").failures == 0
    assert len(world.slack.posts_to(FLOODED)) == 3


class PanickingFetcher:
    """A fetcher in which a Rust extension panics: the exception escapes the whole poll."""

    def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        redirect_policy: object = None,
    ) -> FetchResult:
        raise PanicException("the decoder panicked")


def test_a_panic_that_escapes_a_poll_is_recorded_in_the_feeds_health_and_backed_off(world: World) -> None:
    env = environment_from(world.environ, world.tmp_path)
    app = build_app(env, sleep=world.clock.sleep, now=world.clock, fetcher=PanickingFetcher())
    try:
        feed = app.rules.feed("good")
        assert feed is not None
        for attempt in range(3):
            if attempt:  # to when the feed is due again
                world.clock.advance(seconds=feed.interval_seconds)
                world.clock.now = max(world.clock.now, app.next_poll_at(feed) or world.clock.now)
            report = app.poll_when_due(feed)
            assert report is not None and report.status == "error"
        health = app.store.feed_health("good")
        assert health.failures == 3 and health.last_error == "internal error"
        # Backed off: after three failures in a row, the next poll waits four intervals.
        world.clock.advance(seconds=feed.interval_seconds)
        assert app.poll_when_due(feed) is None
        assert health.last_failure is not None
        assert app.next_poll_at(feed) == health.last_failure + timedelta(seconds=4 * feed.interval_seconds)
    finally:
        app.close()


# -- a flood of items: capped per channel and poll, and posted outside the delivery lock -------------------


def test_a_flood_gets_at_most_the_cap_and_one_n_more_and_never_delays_another_channel(world: World) -> None:
    flood = 300
    kept = MAX_PER_CYCLE + GROUPED_PER_POLL
    with world.start() as app:
        app.poll_all_once()  # baselines
        world.feed_host.serve("/flood", rss(*stories(range(1, flood + 1))))
        world.publish_good_news()
        world.slack.hang_call(1, carry_out=True, method="chat.postMessage")  # the flood's first post
        flooding = in_thread(lambda: world.poll(app, "flood"))
        try:
            assert world.slack.hanging.wait(WAIT)
            # While the flooded channel's post hangs, the other feed's alert goes out in the same cycle.
            assert finishes(lambda: world.poll(app, "good"))
            assert len(world.slack.posts_to(OTHER)) == 1
        finally:
            world.slack.release()  # the held post was carried out but answers a timeout: ...
            flooding.join(WAIT)
        app.retry_pending()  # ... it is found in the channel, not posted again, and the others go out
        assert app.tick() == 2  # the grouped items, in two messages (40 + 10)
        posts = world.slack.posts_to(FLOODED)
        singles = [p["metadata"]["event_payload"]["item_key"] for p in single_alerts(posts)]
        listed = grouped_items(posts)
        [notice] = [p for p in posts if "more matching items" in p["text"]]
        assert len(posts) == 2 + MAX_PER_CYCLE + 1
        # The newest go out: the cap's worth, none twice; the rest are counted once, with the feed's link.
        newest = {f"https://news.example/export-controls/{n}" for n in range(flood - kept + 1, flood + 1)}
        assert len(singles) == MAX_PER_CYCLE and len(listed) == GROUPED_PER_POLL
        assert set(singles) | set(listed) == newest
        assert notice["text"].startswith(f"➕ {flood - kept} more matching items from feed *flood*")
        assert f"<{world.flood_url}|Read them in the feed>" in notice["text"]
        assert app.metrics.registry.get_sample_value(
            "feedwatch_alerts_left_out_total", {"feed": "flood"}
        ) == (flood - kept)
        # What was counted in "N more" is seen: never posted later, even after a restart.
    world.feed_host.serve("/flood", rss(*stories(range(1, flood + 2))))
    with world.start() as app:
        world.poll(app, "flood")
        app.tick()
    later = world.slack.posts_to(FLOODED)[len(posts) :]
    assert [p["metadata"]["event_payload"]["item_key"] for p in later] == [
        f"https://news.example/export-controls/{flood + 1}"
    ]


def test_a_grouped_release_that_hangs_does_not_delay_another_feeds_alert(world: World) -> None:
    with world.start() as app:
        app.poll_all_once()  # baselines
        world.feed_host.serve("/flood", rss(*stories(range(1, 21))))
        world.poll(app, "flood")  # 5 posted, 15 queued for one grouped message
        world.publish_good_news()
        world.slack.hang_call(1, carry_out=True, method="chat.postMessage")  # the grouped message
        releasing = in_thread(app.tick)
        try:
            assert world.slack.hanging.wait(WAIT)
            assert finishes(lambda: world.poll(app, "good"))
            assert len(world.slack.posts_to(OTHER)) == 1
        finally:
            world.slack.release()
            releasing.join(WAIT)
        assert len(grouped_items(world.slack.posts_to(FLOODED))) == 15


def test_a_grouped_release_matches_its_items_again_outside_the_delivery_lock(world: World) -> None:
    with world.start() as app:
        app.poll_all_once()  # baselines
        world.feed_host.serve("/flood", rss(*stories(range(1, 21))))
        world.poll(app, "flood")  # 5 posted, 15 queued for one grouped message
        gate = threading.Event()
        matchers: list[GatedMatcher] = []

        def gated(rules: Sequence[ChannelRule]) -> GatedMatcher:
            matchers.append(GatedMatcher(rules, "flood", gate))
            return matchers[-1]

        app.pipeline.make_matcher = gated
        app.refresh_rules()
        world.publish_good_news()
        releasing = in_thread(app.tick)
        try:
            assert matchers[-1].entered.wait(WAIT)  # the release is matching its queued items again
            assert finishes(lambda: world.poll(app, "good"))
            assert len(world.slack.posts_to(OTHER)) == 1
        finally:
            gate.set()
            releasing.join(WAIT)
        assert len(grouped_items(world.slack.posts_to(FLOODED))) == 15


def test_a_poll_cap_keeps_high_priority_then_the_newest_and_their_order() -> None:
    def match(n: int, *, high: bool = False) -> ChannelMatch:
        rule = ChannelRule(channel="C1", keywords=("x",))
        if high:
            rule = replace(rule, oncall=replace(rule.oncall, priority="high"))
        published = datetime(2026, 6, 1, tzinfo=UTC) + timedelta(minutes=n)
        item = Item(feed_id="f", key=str(n), title=str(n), link="", summary="", published=published)
        return ChannelMatch("C1", item, ("x",), (rule,))

    alerts = [match(n, high=n == 0) for n in range(101)]  # oldest first, the oldest a page
    capped = cap_per_channel(alerts, max_per_cycle=2)  # 2 + GROUPED_PER_POLL = 52 kept
    assert [m.item.key for m in capped.kept] == ["0", *(str(n) for n in range(50, 101))]
    assert capped.left_out == {"C1": 49}
    assert cap_per_channel(alerts[:52], max_per_cycle=2).left_out == {}


def test_an_article_being_posted_by_one_feed_is_not_posted_by_another_meanwhile(world: World) -> None:
    rules = world.tmp_path / "rules.yaml"
    rules.write_text(rules.read_text().replace("    feeds: [good]\n", ""))  # OTHER follows both feeds
    shared = rss_item("Entity list grows", "https://news.example/entity-list-grows")
    with world.start() as app:
        app.poll_all_once()  # baselines
        world.feed_host.serve("/flood", rss(shared, story(0)))
        world.feed_host.serve("/good", rss(shared, story(0, "entity list")))
        world.slack.hang_call(1, carry_out=False, method="chat.postMessage")
        first = in_thread(lambda: world.poll(app, "flood"))
        try:
            assert world.slack.hanging.wait(WAIT)  # on its way, not landed yet
            assert finishes(lambda: world.poll(app, "good"))
            assert finishes(app.retry_pending)
            # Nobody else sent it meanwhile: a second post in flight could land beside the first (the
            # look in the channel before a repost only finds what has landed).
            sent = [c for c in world.slack.calls("chat.postMessage") if "entity-list-grows" in str(c)]
            assert len(sent) == 1
        finally:
            world.slack.release()
            first.join(WAIT)
        world.clock.advance(minutes=1)
        app.retry_pending()  # the post that timed out is looked for in the channel, then made
        app.poll_all_once()
    assert [p["text"] for p in world.slack.posts_to(OTHER)] == [
        "Entity list grows https://news.example/entity-list-grows"
    ]


class PanickingSink:
    """The bot's own sink, in which a panic strikes every delivery (a broken extension in the Slack path)."""

    def __init__(self, real: AlertSink) -> None:
        self.real = real

    def deliver(self, match: ChannelMatch, source: str, *, since: datetime | None = None) -> str | None:
        raise PanicException("the sink panicked")

    def deliver_group(
        self, message: Message, items: Sequence[Item], *, since: datetime | None = None
    ) -> None:
        raise PanicException("the sink panicked")

    def deliver_notice(self, channel: str, text: str) -> str | None:
        return self.real.deliver_notice(channel, text)


def test_a_panic_in_a_retry_or_a_release_is_caught_and_the_next_one_delivers(world: World) -> None:
    with world.start() as app:
        app.poll_all_once()  # baselines
        world.slack.fail_next("chat.postMessage", status=500, error="internal_error")
        world.publish_good_news()
        world.poll(app, "good")  # its alert waits as pending
        world.feed_host.serve("/flood", rss(*stories(range(1, 8))))
        world.poll(app, "flood")  # 5 posted, 2 queued
        assert len(app.store.pending()) == 1 and len(app.store.queued()) == 2
        real = app.pipeline.sink
        app.pipeline.sink = PanickingSink(real)
        world.clock.advance(minutes=1)
        assert app.retry_pending() == (0, 1)  # caught at the job boundary: the job runs again next time
        assert app.tick() == 0  # caught per message: the other groups and the escalations go on
        app.pipeline.sink = real
        world.clock.advance(minutes=2)
        assert app.retry_pending() == (1, 0)  # nothing was left claimed by the crashed attempts
        world.feed_host.serve("/flood", rss(*stories(range(1, 15))))
        world.poll(app, "flood")  # 8 to 12 posted, 13 and 14 queued
        app.pipeline.make_matcher = PanickingOnStory13  # matching 13 again, before its release, panics
        app.refresh_rules()
        assert app.tick() == 2  # the group the panics held back, and 13 with 14
    assert len(world.slack.posts_to(OTHER)) == 1
    assert sorted(grouped_items(world.slack.posts_to(FLOODED))) == [
        "https://news.example/export-controls/13",
        "https://news.example/export-controls/14",
        "https://news.example/export-controls/6",  # the oldest five went one by one
        "https://news.example/export-controls/7",
    ]


@pytest.mark.parametrize("module", ["intake", "inflight"])
def test_what_a_poll_does_before_the_lock_is_pure(module: str) -> None:
    imported = imported_modules(BOT / f"{module}.py")
    assert not {name for name in imported if name.split(".")[0] in ADAPTER_LIBRARIES}
    assert not imported & ADAPTER_MODULES


def test_public_feed_link_keeps_no_secret() -> None:
    assert public_feed_link("https://user:pw@feeds.example:8443/rss?token=s3cret#x") == (
        "https://feeds.example:8443/rss"
    )
    assert public_feed_link("http://[::1]/feed") == "http://[::1]/feed"


def test_claims_are_per_channel_and_article_by_key_or_link() -> None:
    item = Item(feed_id="a", key="guid-1", link="https://news.example/1", title="t")
    same_link = Item(feed_id="b", key="guid-2", link="https://news.example/1", title="t")
    claims = InFlight()
    assert claims.claim(ChannelMatch("C1", item, ()))
    assert not claims.claim(ChannelMatch("C1", same_link, ()))  # the same article through another feed
    assert claims.claim(ChannelMatch("C2", same_link, ()))  # another channel
    claims.release([ChannelMatch("C1", item, ()), ChannelMatch("C2", same_link, ())])
    assert len(claims) == 0 and claims.claim(ChannelMatch("C1", same_link, ()))


def test_a_paused_channel_gets_no_n_more_from_a_flood(world: World) -> None:
    with world.start() as app:
        app.poll_all_once()  # baselines
        app.store.pause(FLOODED, world.clock() + timedelta(hours=1), "U0ALICE01")
        world.feed_host.serve("/flood", rss(*stories(range(1, MAX_PER_CYCLE + GROUPED_PER_POLL + 11))))
        [report] = [r for r in app.poll_all_once() if r.feed_id == "flood"]
        app.tick()
        assert report.left_out == 10
        assert world.slack.posts_to(FLOODED) == []  # the pause holds everything; the log says what was cut
