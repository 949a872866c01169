"""The whole pipeline over real loopback HTTP: a feed host with ETags serving the real SCMP feed as it
changes, and a Slack Web API stand-in that slack_sdk talks to. Time is a test clock; nothing sleeps."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from datetime import timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import App, build_app
from bot.config import environment_from
from bot.errors import BotError
from bot.logs import LOG_FORMATS, configure_logging
from bot.web import HttpServer, detail_routes
from tests.conftest import REPO, Clock, rss_item, scmp_feed
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn, visible_text

NEXPERIA, HUAWEI, NVIDIA = "CNEXPERIA1", "CHUAWEI01", "CNVIDIA01"


def write_rules(folder: Path, feed_url: str, *, backfill: int = 1, extra_channels: str = "") -> Path:
    rules = folder / "rules.yaml"
    rules.write_text(
        f"""
settings:
  interval: 2m
  backfill: {backfill}
feeds:
  - id: scmp
    url: {feed_url}
channels:
  - channel: {NEXPERIA}
    keywords: [Nexperia, Wingtech]
  - channel: "#huawei-watch"
    keywords: [Huawei]
    exclude: [hubris]
  - channel: {NVIDIA}
    feeds: [scmp]
    keywords: [Nvidia]
{extra_channels}"""
    )
    return rules


def write_two_feed_rules(folder: Path, url_a: str, url_b: str) -> None:
    """Feeds a and b, and one channel watching both for Nexperia."""
    (folder / "rules.yaml").write_text(
        f"feeds:\n  - id: a\n    url: {url_a}\n  - id: b\n    url: {url_b}\n"
        f"channels:\n  - channel: {NEXPERIA}\n    keywords: [Nexperia]\n"
    )


@pytest.fixture
def world(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock):
    slack.add_channel(NEXPERIA, "nexperia")
    slack.add_channel(HUAWEI, "huawei-watch")
    slack.add_channel(NVIDIA, "nvidia")
    slack.add_channel("CFILLER01", "random")
    feed_url = feed_host.serve("/rss/519752/feed", scmp_feed(drop_newest=3))
    rules = write_rules(tmp_path, feed_url)
    environ = {
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "BOT_RULES": str(rules),
        "BOT_DB": str(tmp_path / "data" / "state.json"),
    }

    class World:
        def __init__(self) -> None:
            self.feed_host, self.slack, self.clock, self.environ = feed_host, slack, clock, environ
            self.feed_path = "/rss/519752/feed"

        def start(self) -> App:
            env = environment_from(self.environ, tmp_path)
            return build_app(env, sleep=clock.sleep, now=clock)

        def run_once(self) -> App:
            app = self.start()
            try:
                app.poll_all_once()
                app.retry_pending()
            finally:
                app.close()
            return app

        def publish(self, body: bytes) -> None:
            feed_host.serve(self.feed_path, body)

    return World()


def titles(posts: list[dict]) -> list[str]:
    return [post["text"].split(" https://")[0] for post in posts]


def test_first_poll_posts_only_the_backfill_newest_match_per_channel(world) -> None:
    world.run_once()

    assert titles(world.slack.posts_to(NEXPERIA)) == [
        "Wingtech sues Dutch unit Nexperia for US$1.17b as battle for control escalates"
    ]
    assert titles(world.slack.posts_to(HUAWEI)) == [
        "Peking University unveils 3D design tool to power Huawei’s chip ambitions"
    ]
    assert titles(world.slack.posts_to(NVIDIA)) == [
        "US chipmakers in China see revenue rise, defying trade tensions: Hurun list"  # Nvidia in its summary
    ]
    assert len(world.slack.posts) == 3


def test_new_items_reach_exactly_the_right_channels_once(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())  # the three newest SCMP items appear
    world.run_once()

    new_posts = world.slack.posts[before:]
    by_channel = {(p["channel"], t) for p, t in zip(new_posts, titles(new_posts), strict=True)}
    assert by_channel == {
        (
            NEXPERIA,
            "Wingtech says core of Nexperia China unit now based on mainland, can operate independently",
        ),
        (HUAWEI, "Is Huawei’s new chip scaling law a true breakthrough, or mere hype?"),
        # The newest item names Huawei too, but its summary says "hubris": excluded for #huawei-watch.
    }
    assert len(new_posts) == 2


def test_the_alert_message_is_block_kit_with_thumbnail_metadata_and_no_unfurl(world) -> None:
    world.run_once()
    post = world.slack.posts_to(NEXPERIA)[0]

    article, section, context = post["blocks"]
    assert visible_text([article]).startswith(
        "*<https://www.scmp.com/tech/tech-war/article/3354611/wingtech-sues"
    )
    assert "utm_source" not in visible_text([article])
    assert "*Nexperia*" in visible_text([article]) or "*Wingtech*" in visible_text([article])
    assert section["accessory"]["type"] == "image"
    assert section["accessory"]["image_url"].startswith("https://cdn.i-scmp.com/")
    assert "&amp;" not in section["accessory"]["image_url"]
    assert section["text"]["text"] == "matched `Nexperia`, `Wingtech`"
    assert "South China Morning Post" in context["elements"][0]["text"]
    assert post["unfurl_links"] is False and post["unfurl_media"] is False
    assert post["metadata"]["event_type"] == "feed_alert"
    assert post["metadata"]["event_payload"]["feed_id"] == "scmp"
    assert post["text"].startswith("Wingtech sues Dutch unit Nexperia")


def test_a_rerun_and_a_restart_post_nothing_and_use_conditional_get(world) -> None:
    world.run_once()
    posted = len(world.slack.posts)

    world.run_once()  # the same process would do the same: the host answers 304
    world.run_once()  # a restart: new App, same BOT_DB

    assert len(world.slack.posts) == posted
    last = world.feed_host.requests_for(world.feed_path)[-1]
    assert last["headers"].get("if-none-match")
    assert "feedwatch/" in last["headers"]["user-agent"]
    assert "gzip" in last["headers"]["accept-encoding"]


def test_a_server_ignoring_conditional_headers_still_posts_nothing_twice(world) -> None:
    world.feed_host.honour_conditional = False
    world.run_once()
    posted = len(world.slack.posts)
    world.run_once()
    assert len(world.slack.posts) == posted


def test_a_slack_outage_loses_nothing_and_duplicates_nothing(world) -> None:
    world.run_once()
    before = len(world.slack.posts)

    world.slack.set_down(True)
    world.publish(scmp_feed())
    world.run_once()  # Slack answers 503: alerts go pending, seen state moves on
    world.clock.advance(minutes=5)
    world.run_once()  # still down: retried, still pending, nothing posted
    assert len(world.slack.posts) == before

    world.slack.set_down(False)
    world.clock.advance(minutes=5)
    world.run_once()  # Slack is back: the pending alerts go out, once

    new_posts = world.slack.posts[before:]
    assert sorted(titles(new_posts)) == sorted(
        [
            "Wingtech says core of Nexperia China unit now based on mainland, can operate independently",
            "Is Huawei’s new chip scaling law a true breakthrough, or mere hype?",
        ]
    )
    world.clock.advance(minutes=5)
    world.run_once()
    assert len(world.slack.posts) == before + 2


def test_429_is_retried_after_retry_after_without_real_sleep(world) -> None:
    world.slack.fail_next("chat.postMessage", status=429, retry_after=7, error="ratelimited")
    world.run_once()

    assert len(world.slack.posts) == 3
    assert 7 in world.clock.slept


def test_channel_not_found_keeps_the_alert_pending_and_other_channels_get_theirs(
    world, tmp_path, caplog
) -> None:
    write_rules(
        tmp_path,
        world.feed_host.url(world.feed_path),
        extra_channels="  - channel: CGONE0001\n    keywords: [Nexperia]\n",
    )
    app = world.run_once()

    assert len(world.slack.posts) == 3
    pending = app.store.pending()
    assert [(p.match.channel, p.last_error) for p in pending] == [("CGONE0001", "channel_not_found")]
    assert any("channel_not_found" in r.message and "CGONE0001" in r.message for r in caplog.records)


def test_an_article_in_two_feeds_is_posted_to_a_channel_once(world, tmp_path) -> None:
    story = rss_item(
        "Nexperia wins ruling",
        "https://example.com/nexperia-ruling?utm_source=rss",
        description="Court rules.",
    )
    same_story = rss_item(
        "Nexperia wins ruling",
        "https://example.com/nexperia-ruling?utm_medium=feed",
        description="Court rules.",
    )
    url_a = world.feed_host.serve("/a.xml", scmp_feed(extra_items=(story,)))
    url_b = world.feed_host.serve("/b.xml", scmp_feed(extra_items=(same_story,)))
    write_two_feed_rules(tmp_path, url_a, url_b)
    world.run_once()
    assert titles(world.slack.posts_to(NEXPERIA)) == ["Nexperia wins ruling"]


def test_hash_channel_names_are_resolved_and_public_channels_joined(world) -> None:
    world.run_once()
    assert world.slack.posts_to(HUAWEI)  # "#huawei-watch" became its ID
    joined = {call["channel"] for call in world.slack.calls("conversations.join")}
    assert joined == {NEXPERIA, HUAWEI, NVIDIA}


class CrashAfter:
    """Wraps a sink and kills the 'process' (a BaseException nothing catches) after n deliveries."""

    def __init__(self, sink, n: int) -> None:
        self.sink, self.n = sink, n

    def deliver(self, match, source, *, since=None) -> str | None:
        if self.n == 0:
            raise SystemExit("killed")
        self.n -= 1
        return self.sink.deliver(match, source, since=since)


def killed(app) -> None:
    """What the kernel does for a killed process: its lock on the state files goes, and nothing it held in
    memory is written (the backend's close only lets go of the lock; the store's would flush)."""
    app.store._backend.close()


def test_a_crash_mid_cycle_neither_reposts_nor_drops(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())

    app = world.start()
    app.pipeline.sink = CrashAfter(app.pipeline.sink, 1)
    with pytest.raises(SystemExit):
        app.poll_all_once()  # one alert is posted, then the process dies before the cycle is written
    killed(app)
    assert len(world.slack.posts) == before + 1

    world.run_once()  # restart: the cycle is redone from the feed; the posted alert is known from the outbox
    new_titles = titles(world.slack.posts[before:])
    assert sorted(new_titles) == sorted(
        [
            "Wingtech says core of Nexperia China unit now based on mainland, can operate independently",
            "Is Huawei’s new chip scaling law a true breakthrough, or mere hype?",
        ]
    )


def test_slack_5xx_bursts_are_retried_with_backoff(world) -> None:
    world.slack.fail_next("chat.postMessage", times=2, status=502, body="<html>Bad Gateway</html>")
    world.run_once()  # the first 502 holds the cycle: Slack may be down
    assert len(world.slack.posts) == 0
    world.clock.advance(seconds=30)
    world.run_once()  # the second 502 again
    world.clock.advance(seconds=60)
    world.run_once()
    assert len(world.slack.posts) == 3


def test_a_post_slack_took_but_answered_500_is_not_posted_twice(world) -> None:
    world.slack.fail_next("chat.postMessage", status=500, error="internal_error", after_posting=True)
    world.run_once()
    assert len(world.slack.posts) == 1  # it landed, but the bot cannot know: it stays pending
    world.clock.advance(minutes=1)
    world.run_once()  # before posting again the bot looks in the channel and finds it by its metadata
    assert len(world.slack.posts) == 3
    assert len({(p["channel"], p["metadata"]["event_payload"]["item_key"]) for p in world.slack.posts}) == 3
    assert world.slack.calls("conversations.history")


def test_a_post_slack_refused_is_retried_without_searching_the_channel(world) -> None:
    world.slack.fail_next("chat.postMessage", status=429, retry_after=120, error="ratelimited")
    world.run_once()
    searched_at_start = len(world.slack.calls("conversations.history"))  # a first start looks for its alerts
    world.clock.advance(minutes=3)
    world.run_once()
    assert len(world.slack.posts) == 3
    # A refusal is certain: nothing to look for before the retry.
    assert len(world.slack.calls("conversations.history")) == searched_at_start


def test_refused_connections_are_retried_with_backoff_and_a_first_start_says_why_it_cannot_go_on(
    world,
) -> None:
    world.environ["SLACK_API_URL"] = "http://127.0.0.1:9/api/"  # nothing listens on the discard port
    with pytest.raises(BotError, match=r"cannot resolve channel names through Slack \(connection error"):
        world.start()
    assert world.clock.slept == [1, 2, 4, 1, 2, 4]  # auth.test, then conversations.list, each tried 4 times


def test_a_refused_token_at_run_time_stops_posting_and_keeps_every_alert(world, caplog) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())
    app = world.start()  # started with a good token...
    world.slack.state.token = "xoxb-rotated"  # ...which is then revoked
    app.poll_all_once()
    app.close()
    assert len(world.slack.posts) == before
    assert len(app.store.pending()) == 2
    assert (
        len(world.slack.calls("chat.postMessage")) == before
    )  # the first refusal (joining) stopped the rest
    assert sum("invalid_auth" in r.message for r in caplog.records) == 1

    world.environ["SLACK_BOT_TOKEN"] = "xoxb-rotated"  # the operator sets the new token and restarts
    world.clock.advance(minutes=2)
    world.run_once()
    assert len(world.slack.posts) == before + 2


def test_a_private_channel_the_bot_is_not_in_is_reported_once(world, tmp_path, caplog) -> None:
    world.slack.add_channel("CPRIVATE1", "secret", private=True)
    write_rules(
        tmp_path,
        world.feed_host.url(world.feed_path),
        extra_channels="  - channel: CPRIVATE1\n    keywords: [Nexperia, Huawei]\n",
    )
    caplog.clear()
    world.run_once()
    world.publish(scmp_feed())
    app = world.start()  # a restart: the channel is still known not to take posts
    app.poll_all_once()
    world.clock.advance(minutes=1)
    app.retry_pending()
    app.close()
    reports = [r.message for r in caplog.records if "not_in_channel" in r.message]
    assert len(reports) == 1 and "CPRIVATE1" in reports[0] and "/invite" in reports[0]
    assert not world.slack.posts_to("CPRIVATE1")
    assert {p.match.channel for p in app.store.pending()} == {"CPRIVATE1"}


def test_a_failing_feed_is_logged_with_its_reason_and_the_others_carry_on(world, tmp_path, caplog) -> None:
    ok_url = world.feed_host.url(world.feed_path)
    broken_url = world.feed_host.serve("/broken", b"<html><body>Oops</body></html>", "text/html")
    (tmp_path / "rules.yaml").write_text(
        f"feeds:\n  - id: broken\n    url: {broken_url}\n  - id: scmp\n    url: {ok_url}\n"
        f"channels:\n  - channel: {NEXPERIA}\n    keywords: [Nexperia]\n"
    )
    app = world.start()
    reports = app.poll_all_once()
    app.close()
    assert [r.status for r in reports] == ["error", "ok"]
    assert world.slack.posts_to(NEXPERIA)
    line = next(r.message for r in caplog.records if "feed=broken" in r.message)
    assert "status=error" in line and "not a feed" in line


def test_an_unknown_channel_name_is_reported_with_its_place_in_the_rules(world, tmp_path, caplog) -> None:
    rules = write_rules(
        tmp_path,
        world.feed_host.url(world.feed_path),
        extra_channels='  - channel: "#no-such-channel"\n    keywords: [Nexperia]\n',
    )
    world.run_once()
    assert len(world.slack.posts) == 3
    line = next(r.message for r in caplog.records if "#no-such-channel" in r.message)
    assert f"at={rules}:17" in line


def test_slack_unreachable_at_start_uses_remembered_channel_ids(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.slack.set_down(True)
    world.publish(scmp_feed())
    world.run_once()  # starts although conversations.list fails: IDs come from the last start
    world.slack.set_down(False)
    world.clock.advance(minutes=2)
    world.run_once()
    assert len(world.slack.posts) == before + 2


def test_a_channel_added_later_starts_from_the_next_new_item(world, tmp_path) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.slack.add_channel("CLATE0001", "late")
    write_rules(
        tmp_path,
        world.feed_host.url(world.feed_path),
        extra_channels="  - channel: CLATE0001\n    keywords: [Huawei, Nexperia]\n",
    )
    world.run_once()  # same feed: no backfill for the newcomer
    assert len(world.slack.posts) == before

    world.publish(scmp_feed())
    world.run_once()
    assert titles(world.slack.posts_to("CLATE0001")) == [
        "Wingtech says core of Nexperia China unit now based on mainland, can operate independently",
        "Is Huawei’s new chip scaling law a true breakthrough, or mere hype?",
        "US pressure has only helped make China’s tech giants stronger",
    ]


def test_an_empty_first_answer_is_no_baseline(world) -> None:
    world.publish(scmp_feed(drop_newest=50))  # the feed answers with no items at all
    world.run_once()
    world.publish(scmp_feed(drop_newest=3))
    world.run_once()  # the first poll with items is the backfill: no flood
    assert len(world.slack.posts) == 3


def test_the_same_process_polling_again_posts_nothing(world) -> None:
    app = world.start()
    app.poll_all_once()
    posted = len(world.slack.posts)
    assert [r.status for r in app.poll_all_once()] == ["not_modified"]
    world.publish(scmp_feed())
    app.poll_all_once()
    app.poll_all_once()
    app.close()
    assert len(world.slack.posts) == posted + 2


def test_a_slack_call_that_times_out_after_posting_is_found_not_reposted(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())
    app = world.start()
    try:
        app.pipeline.sink._client.web.timeout = 1  # type: ignore[attr-defined]  # 15 s in production
        world.slack.fail_next("chat.postMessage", hang=True)  # Slack posts it, and never answers
        app.poll_all_once()  # the read times out: the outcome is unknown, so nothing more is tried
        world.slack.release()
        assert len(world.slack.posts) == before + 1
        world.clock.advance(minutes=1)
        app.retry_pending()  # the channel is searched first: found, not posted again
        assert len(world.slack.posts) == before + 2
        assert len({post["text"] for post in world.slack.posts}) == len(world.slack.posts)
    finally:
        app.close()


def test_a_429_storm_is_waited_out_as_slack_asks_without_a_tight_loop(world) -> None:
    world.slack.fail_next("chat.postMessage", times=40, status=429, retry_after=3, error="ratelimited")
    app = world.start()
    try:
        app.poll_all_once()
        calls = lambda: len(world.slack.calls("chat.postMessage"))  # noqa: E731
        in_the_cycle = calls()
        assert in_the_cycle <= 4  # a few tries of the first alert; the rest of the cycle waits as pending
        assert world.clock.slept and min(world.clock.slept) >= 3  # every wait as long as Slack asked
        for _ in range(30):  # 15 minutes of the pending job, every 30 s
            world.clock.advance(seconds=30)
            app.retry_pending()
        assert calls() == 40 + 3  # each refusal waited out, then each alert posted once: no extra calls
        assert len(world.slack.posts) == 3  # and once the storm passed, everything went out, once
        assert len({post["text"] for post in world.slack.posts}) == 3
    finally:
        app.close()


def test_a_long_retry_after_is_not_waited_out_inline(world) -> None:
    world.slack.fail_next("chat.postMessage", status=429, retry_after=120, error="ratelimited")
    app = world.start()
    app.poll_all_once()
    assert world.clock.slept == []  # 120 s is longer than the bot waits inside a call
    [held, *_] = sorted(app.store.pending(), key=lambda p: p.next_attempt)
    assert held.next_attempt == world.clock.now + timedelta(seconds=120)
    world.clock.advance(seconds=60)
    assert app.retry_pending() == (0, 3)  # not yet: Slack said two minutes
    world.clock.advance(seconds=61)
    assert app.retry_pending() == (3, 0)
    app.close()


def test_alerts_held_by_an_outage_go_out_as_soon_as_slack_is_back(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.slack.set_down(True)
    world.publish(scmp_feed())
    app = world.start()
    for _ in range(4):  # a long outage: the pending backoff has grown to minutes
        app.poll_all_once()
        world.clock.advance(minutes=3)
        app.retry_pending()
    world.slack.set_down(False)
    world.publish(scmp_feed(extra_items=(rss_item("Nexperia news", "https://e.com/n"),)))
    app.poll_all_once()  # Slack accepts the newest alert...
    app.retry_pending()  # ...so the held ones are due at once, whatever their backoff said
    app.close()
    assert len(world.slack.posts) == before + 3


def test_pending_alerts_for_a_channel_removed_from_the_rules_are_dropped(world, tmp_path, caplog) -> None:
    world.slack.add_channel("CGONE0001", "gone")
    world.slack.archive("CGONE0001")
    write_rules(
        tmp_path,
        world.feed_host.url(world.feed_path),
        extra_channels="  - channel: CGONE0001\n    keywords: [Nexperia]\n",
    )
    app = world.start()
    app.poll_all_once()
    app.close()
    write_rules(tmp_path, world.feed_host.url(world.feed_path))  # the operator removes the channel
    world.clock.advance(hours=2)
    app = world.run_once()
    assert app.store.pending() == []
    assert not world.slack.posts_to("CGONE0001")
    assert any("pending alert dropped channel=CGONE0001" in r.message for r in caplog.records)


def test_two_feeds_polled_at_once_post_a_shared_article_once(world, tmp_path) -> None:
    story = rss_item("Nexperia wins ruling", "https://example.com/ruling?utm_source=a")
    url_a = world.feed_host.serve("/a.xml", scmp_feed(drop_newest=3))
    url_b = world.feed_host.serve("/b.xml", scmp_feed(drop_newest=3))
    write_two_feed_rules(tmp_path, url_a, url_b)
    world.run_once()
    before = len(world.slack.posts)
    world.feed_host.serve("/a.xml", scmp_feed(drop_newest=3, extra_items=(story,)))
    world.feed_host.serve("/b.xml", scmp_feed(drop_newest=3, extra_items=(story.replace(b"=a", b"=b"),)))
    app = world.start()
    threads = [threading.Thread(target=app.poll, args=(feed,)) for feed in app.rules.feeds]
    threads.append(threading.Thread(target=app.retry_pending))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    app.close()
    assert titles(world.slack.posts[before:]) == ["Nexperia wins ruling"]


def feed_a_posts_an_article_slack_does_not_confirm(world, tmp_path) -> tuple[bytes, int]:
    """Feeds a and b, polled once; then feed a carries an article that Slack posts but answers 500
    about (on the next poll). Returns feed b's copy of it (another non-URL guid, the same link) and the
    number of posts before."""
    story_a = rss_item("Nexperia wins ruling", "a-1001", link="https://example.com/ruling")
    story_b = rss_item("Nexperia wins ruling", "b-77", link="https://example.com/ruling")
    url_a = world.feed_host.serve("/a.xml", scmp_feed(drop_newest=3))
    url_b = world.feed_host.serve("/b.xml", scmp_feed(drop_newest=3))
    write_two_feed_rules(tmp_path, url_a, url_b)
    world.run_once()
    world.feed_host.serve("/a.xml", scmp_feed(drop_newest=3, extra_items=(story_a,)))
    world.slack.fail_next("chat.postMessage", status=500, error="internal_error", after_posting=True)
    return story_b, len(world.slack.posts)


def test_an_article_from_a_second_feed_waits_for_the_first_feeds_uncertain_post(world, tmp_path) -> None:
    story_b, before = feed_a_posts_an_article_slack_does_not_confirm(world, tmp_path)
    world.run_once()  # feed a: Slack posts it but answers 500
    world.feed_host.serve("/b.xml", scmp_feed(drop_newest=3, extra_items=(story_b,)))
    world.clock.advance(minutes=1)
    world.run_once()  # feed b brings the same article; the pending retry finds the first post
    world.clock.advance(minutes=5)
    world.run_once()
    assert titles(world.slack.posts[before:]) == ["Nexperia wins ruling"]


def test_after_a_crash_a_second_feeds_copy_of_an_unanswered_post_is_looked_up_first(world, tmp_path) -> None:
    story_b, before = feed_a_posts_an_article_slack_does_not_confirm(world, tmp_path)
    app = world.start()

    def die(_change) -> None:
        raise SystemExit("killed before the cycle was written")

    app.store.commit_cycle = die
    with pytest.raises(SystemExit):
        app.poll(app.rules.feeds[0])  # posted, unanswered, and the pending alert never written
    killed(app)
    world.feed_host.serve("/a.xml", scmp_feed(drop_newest=3))  # feed a has dropped it again
    world.feed_host.serve("/b.xml", scmp_feed(drop_newest=3, extra_items=(story_b,)))
    world.clock.advance(minutes=1)
    world.run_once()  # feed b's copy, under another key: the channel is searched, not posted to blind
    assert titles(world.slack.posts[before:]) == ["Nexperia wins ruling"]


def test_a_crash_after_an_unanswered_post_still_checks_before_posting_again(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())
    world.slack.fail_next("chat.postMessage", status=500, error="internal_error", after_posting=True)
    app = world.start()

    def die(_change) -> None:
        raise SystemExit("killed before the cycle was written")

    app.store.commit_cycle = die
    with pytest.raises(SystemExit):
        app.poll_all_once()  # the first post is unanswered, the cycle's write never happens
    killed(app)
    world.clock.advance(minutes=1)
    world.run_once()  # the cycle is redone from the feed; the unanswered one is looked up, not reposted
    assert len(world.slack.posts) == before + 2
    assert len({p["metadata"]["event_payload"]["item_key"] for p in world.slack.posts[before:]}) == 2


def test_a_renamed_channel_keeps_getting_its_alerts(world, caplog) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.slack.state.channels[HUAWEI].name = "huawei-news"  # renamed in Slack; rules still say #huawei-watch
    world.publish(scmp_feed())
    world.run_once()
    assert len(world.slack.posts_to(HUAWEI)) == 2 and len(world.slack.posts) == before + 2
    assert any(
        "channel renamed channel=#huawei-watch" in r.message and f"now=#huawei-news id={HUAWEI}" in r.message
        for r in caplog.records
    )


@pytest.mark.parametrize("fate", ["archived", "deleted"])
def test_an_archived_or_deleted_channel_is_reported_and_its_alerts_do_not_pile_up(
    world, caplog, fate: str
) -> None:
    world.run_once()
    if fate == "archived":
        world.slack.archive(HUAWEI)
    else:
        del world.slack.state.channels[HUAWEI]
    world.publish(scmp_feed())
    app = world.run_once()
    assert not any(p.match.channel == HUAWEI for p in app.store.pending())
    assert not [c for c in world.slack.calls("chat.postMessage") if c["channel"] == HUAWEI][1:]
    wanted = "channel archived" if fate == "archived" else "channel not found"
    [line] = [r.message for r in caplog.records if r.message.startswith(wanted)]
    assert "channel=#huawei-watch" in line and "rules.yaml:" in line
    assert len(world.slack.posts_to(NEXPERIA)) == 2  # the other channels carry on


def test_on_shutdown_alerts_not_yet_started_wait_as_pending(world) -> None:
    world.run_once()
    world.publish(scmp_feed())
    app = world.start()
    before = len(world.slack.calls("chat.postMessage"))
    app.pipeline.stop_delivering()
    [report] = app.poll_all_once()
    app.close()
    assert (report.posted, report.pending) == (0, 2)
    assert len(world.slack.calls("chat.postMessage")) == before
    world.clock.advance(minutes=1)
    world.run_once()
    assert len(world.slack.posts) == 5


class _CountingInFlight(BaseHTTPRequestHandler):
    """Holds each request until `limit` are in flight at once (or every expected one has come), so the
    most seen together shows whether the bot fetches in parallel, and that it stays within its bound."""

    limit = 3
    expected = 8
    body = b""
    state: ClassVar[dict[str, int]] = {}
    changed = threading.Condition()

    def do_GET(self) -> None:
        with self.changed:
            self.state["in_flight"] += 1
            self.state["arrived"] += 1
            self.state["most"] = max(self.state["most"], self.state["in_flight"])
            self.changed.notify_all()
            self.changed.wait_for(
                lambda: self.state["in_flight"] >= self.limit or self.state["arrived"] == self.expected,
                timeout=5,
            )
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)
        with self.changed:
            self.state["in_flight"] -= 1

    def log_message(self, *args: object) -> None:
        pass


def test_feeds_are_fetched_in_parallel_up_to_poll_concurrency(tmp_path: Path) -> None:
    handler = type(
        "Handler",
        (_CountingInFlight,),
        {"body": scmp_feed(), "state": {"in_flight": 0, "arrived": 0, "most": 0}},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        feeds = "".join(f"  - id: f{n}\n    url: {url}/feed/{n}\n" for n in range(8))
        rules = tmp_path / "rules.yaml"
        channels = "channels:\n  - channel: C1\n    keywords: [x]\n"
        rules.write_text(f"settings:\n  poll_concurrency: 3\nfeeds:\n{feeds}{channels}")
        app = build_app(environment_from({"BOT_RULES": str(rules)}, tmp_path))
        reports = app.poll_all_once()
        app.close()
    finally:
        server.shutdown()
        server.server_close()
    assert [report.feed_id for report in reports] == [f"f{n}" for n in range(8)]  # in the rules' order
    assert all(report.status == "ok" for report in reports)
    assert handler.state["most"] == 3  # three at once, never more


# -- health and metrics ------------------------------------------------------------------------------


def scrape(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics from the bot's own HTTP server, parsed as Prometheus would: {(sample, labels): value}."""
    server = HttpServer(detail_routes(app.status, app.metrics.exposition), port=0, host="127.0.0.1").start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=30)
    finally:
        server.stop()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def healthz(app: App) -> httpx.Response:
    server = HttpServer(detail_routes(app.status, None), port=0, host="127.0.0.1").start()
    try:
        return httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=30)
    finally:
        server.stop()


def test_metrics_count_polls_new_items_alerts_and_their_latency(world) -> None:
    world.run_once()
    world.publish(scmp_feed())  # three new items, two of them alerts
    app = world.start()
    try:
        app.poll_all_once()
        world.feed_host.fail_next(world.feed_path, status=503)
        world.clock.advance(minutes=2)
        app.poll_all_once()
        metrics = scrape(app)
    finally:
        app.close()
    assert metrics[("feedwatch_polls_total", (("feed", "scmp"), ("status", "ok")))] == 1
    assert metrics[("feedwatch_polls_total", (("feed", "scmp"), ("status", "error")))] == 1
    assert metrics[("feedwatch_fetch_errors_total", (("feed", "scmp"), ("kind", "http_503")))] == 1
    assert metrics[("feedwatch_items_seen_total", (("feed", "scmp"),))] == 3
    assert metrics[("feedwatch_alerts_posted_total", ())] == 2
    assert metrics[("feedwatch_alert_latency_seconds_count", ())] == 2
    assert metrics[("feedwatch_failing_feeds", ())] == 1
    assert metrics[("feedwatch_pending_alerts", ())] == 0
    assert metrics[("feedwatch_slack_auth_ok", ())] == 1


def test_alert_latency_runs_from_first_seen_to_posted_through_an_outage(world) -> None:
    world.run_once()
    world.publish(scmp_feed())
    world.slack.set_down(True)
    app = world.start()
    try:
        app.poll_all_once()  # seen now, posted nowhere: pending
        world.slack.set_down(False)
        world.clock.advance(minutes=10)
        app.retry_pending()
        metrics = scrape(app)
    finally:
        app.close()
    assert metrics[("feedwatch_alerts_posted_total", ())] == 2
    assert metrics[("feedwatch_alert_latency_seconds_count", ())] == 2
    assert metrics[("feedwatch_alert_latency_seconds_sum", ())] >= 2 * 600  # both waited out the outage
    assert metrics[("feedwatch_alert_latency_seconds_bucket", (("le", "300.0"),))] == 0
    assert metrics[("feedwatch_alerts_failed_total", (("error", "other"),))] >= 1


def test_a_refused_token_stops_posting_turns_healthz_503_and_it_recovers_once_fixed(world) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())
    app = world.start()
    try:
        real_token = world.slack.state.token
        world.slack.state.token = "xoxb-reissued"  # the bot's token is revoked while it runs
        app.poll_all_once()
        assert len(world.slack.posts) == before  # refused: the cycle's alerts wait as pending
        assert len(app.store.pending()) == 2
        response = healthz(app)
        assert response.status_code == 503
        assert response.json()["status"] == "slack_auth_failed"
        assert response.json()["slack_error"] == "invalid_auth"
        assert scrape(app)[("feedwatch_slack_auth_ok", ())] == 0

        world.slack.state.token = real_token  # an admin restores the app's install
        world.clock.advance(minutes=5)
        app.retry_pending()
        assert len(world.slack.posts) == before + 2  # nothing lost
        assert healthz(app).status_code == 200
    finally:
        app.close()


def test_json_log_lines_carry_each_field_and_never_a_token(tmp_path: Path, feed_host: FeedHost) -> None:
    feed_url = feed_host.serve("/feed", scmp_feed())
    write_rules(tmp_path, feed_url)
    environ = {
        "PATH": "/usr/bin:/bin",
        "BOT_RULES": str(tmp_path / "rules.yaml"),
        "BOT_DB": str(tmp_path / "state.json"),
        "BOT_LOG_FORMAT": "json",
        "SLACK_SIGNING_SECRET": "xoxb-pasted-into-the-wrong-variable",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--once"], env=environ, cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    [poll] = [line for line in lines if line["event"] == "poll"]
    assert poll["feed"] == "scmp" and poll["status"] == "ok" and poll["level"] == "INFO"
    assert poll["first_poll"] == "yes" and int(poll["new"]) == 50
    assert "xoxb-pasted" not in done.stderr


def test_tokens_are_masked_in_log_lines_whatever_logged_them(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for log_format in LOG_FORMATS:
            configure_logging("INFO", log_format)
            logging.getLogger("slack_bolt").warning(
                "request failed: token=xoxb-1234-5678-abcdef xapp-1-A0-99"
            )
            err = capsys.readouterr().err
            assert "1234-5678" not in err and "A0-99" not in err and "xoxb-…(masked)" in err
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


# -- Slack refusing a message's format ------------------------------------------------------------------


@pytest.mark.parametrize("error", ["msg_too_long", "invalid_blocks"])
def test_a_message_slack_refuses_as_formatted_goes_as_plain_text_instead_of_being_dropped(
    world, error: str
) -> None:
    world.run_once()
    before = len(world.slack.posts)
    world.publish(scmp_feed())
    # invalid_blocks twice: once with the thumbnail, once without it
    world.slack.fail_next("chat.postMessage", times=2 if error == "invalid_blocks" else 1, error=error)
    world.run_once()
    posts = world.slack.posts[before:]
    assert len(posts) == 2  # both alerts, none dropped
    [plain] = [post for post in posts if "blocks" not in post]
    assert plain["text"].startswith("Wingtech says core of Nexperia China unit now based on mainland")
    assert "https://www.scmp.com/" in plain["text"]
    assert plain["metadata"]["event_type"] == "feed_alert"  # still found by a later check before reposting
    world.run_once()
    assert len(world.slack.posts) == before + 2


# -- a channel that cannot take posts -----------------------------------------------------------------


def nexperia_story(n: int) -> bytes:
    return rss_item(f"Nexperia update {n}", f"https://www.scmp.com/tech/nexperia-{n}")


def test_an_archived_channel_is_marked_broken_tried_hourly_and_its_alerts_given_up_after_a_day(world) -> None:
    world.run_once()
    world.slack.archive(NEXPERIA)
    world.publish(scmp_feed())

    def attempts() -> int:
        return len([c for c in world.slack.calls("chat.postMessage") if c["channel"] == NEXPERIA]) - earlier

    earlier = 0
    earlier = attempts()
    app = world.start()
    try:
        app.poll_all_once()  # the Nexperia alert is refused: is_archived
        assert attempts() == 1
        broken = healthz(app).json()["broken_channels"]
        assert broken == {NEXPERIA: {"error": "is_archived", "since": world.clock.now.isoformat()}}

        # More news for the channel within the hour: kept pending, not tried again.
        world.publish(scmp_feed(extra_items=(nexperia_story(1),)))
        world.clock.advance(minutes=20)
        app.poll_all_once()
        app.retry_pending()
        assert attempts() == 1 and len(app.store.pending()) == 2

        world.clock.advance(minutes=41)  # an hour since the last try: one more
        app.retry_pending()
        assert attempts() == 2

        world.clock.advance(days=1)
        app.retry_pending()  # a day on, still archived: its alerts are given up, with a log line
        assert app.store.pending() == [] and attempts() == 2
        assert healthz(app).json()["broken_channels"][NEXPERIA]["error"] == "is_archived"
    finally:
        app.close()


def test_a_channel_that_takes_posts_again_gets_its_waiting_alerts_and_loses_its_mark(world) -> None:
    world.run_once()
    before = len(world.slack.posts_to(NEXPERIA))
    world.slack.archive(NEXPERIA)
    world.publish(scmp_feed())
    app = world.start()
    try:
        app.poll_all_once()
        world.slack.state.channels[NEXPERIA].archived = False  # someone unarchives it
        world.clock.advance(hours=1)
        app.retry_pending()
        assert len(world.slack.posts_to(NEXPERIA)) == before + 1
        assert healthz(app).json()["broken_channels"] == {}
    finally:
        app.close()


# -- a host that wipes local files at every restart -----------------------------------------------------


def wipe(world) -> None:
    """What a Procfile host does to local files at a restart."""
    shutil.rmtree(Path(world.environ["BOT_DB"]).parent)


def test_a_wipe_of_the_state_files_neither_reposts_nor_drops(world, caplog) -> None:
    world.run_once()  # the first poll's backfill
    world.publish(scmp_feed())
    world.clock.advance(minutes=5)
    world.run_once()  # two alerts
    before = sorted((post["channel"], post["text"]) for post in world.slack.posts)
    assert len(before) == 5

    wipe(world)
    world.clock.advance(minutes=5)
    later = rss_item(
        "Nexperia after the restart",
        "https://www.scmp.com/tech/nexperia-after-restart",
        published=format_datetime(world.clock.now + timedelta(minutes=1)),
    )
    world.publish(scmp_feed(extra_items=(later,)))
    world.clock.advance(minutes=2)
    world.run_once()

    after = sorted((post["channel"], post["text"]) for post in world.slack.posts)
    assert len(after) == len(before) + 1 and len(set(after)) == len(after)  # nothing twice
    new = [post for post in after if post not in before]
    assert [text.split(" https://")[0] for _, text in new] == ["Nexperia after the restart"]  # nothing lost
    assert "state rebuilt from slack channels=3 alerts=5" in caplog.text
    world.clock.advance(minutes=2)
    world.run_once()  # and from then on, the rebuilt state is the state
    assert len(world.slack.posts) == len(after)


def test_a_start_with_no_state_and_no_earlier_alert_is_a_first_poll(world, caplog) -> None:
    caplog.set_level("INFO")
    world.run_once()
    assert "no state and no earlier alerts in 3 channels: first poll" in caplog.text
    assert len(world.slack.posts) == 3  # the backfill, one per channel
