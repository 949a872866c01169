"""`run`: the scheduler polls every feed, retries pending alerts, and stops cleanly on SIGTERM."""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import Request, urlopen

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from bot.app import build_app, run_scheduler, sync_feed_jobs
from bot.config import environment_from
from bot.model import AddedFeed
from bot.pipeline import utc_now
from bot.storage import open_store
from tests.conftest import REPO, Clock, scmp_feed
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_end_to_end import NEXPERIA, write_rules

DEMO_RULES = REPO / "bot" / "sample" / "demo-rules.yaml"


class CountingSink:
    def __init__(self, sink, expected: int) -> None:
        self.sink, self.expected, self.done = sink, expected, threading.Event()
        self.count = 0

    def deliver(self, match, source, *, since=None) -> str | None:
        ts = self.sink.deliver(match, source, since=since)
        self.count += 1
        if self.count >= self.expected:
            self.done.set()
        return ts


def test_run_polls_every_feed_at_start_and_saves_state_on_stop(
    tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn
) -> None:
    for channel, name in ((NEXPERIA, "nexperia"), ("CHUAWEI01", "huawei-watch"), ("CNVIDIA01", "nvidia")):
        slack.add_channel(channel, name)
    rules = write_rules(tmp_path, feed_host.serve("/feed", scmp_feed()))
    env = environment_from(
        {"SLACK_BOT_TOKEN": slack.state.token, "SLACK_API_URL": slack.url, "BOT_RULES": str(rules)}, tmp_path
    )
    app = build_app(env)
    counting = CountingSink(app.pipeline.sink, expected=3)
    app.pipeline.sink = counting
    stop = threading.Event()
    runner = threading.Thread(target=run_scheduler, args=(app, stop))
    runner.start()
    try:
        assert counting.done.wait(timeout=30), "the scheduler did not poll the feed at start"
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert open_store(tmp_path / "data" / "state.json").seen_count("scmp") == 50
    assert len(slack.posts) == 3


def test_a_feed_added_to_the_rules_file_is_polled_without_a_restart(
    tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn
) -> None:
    slack.add_channel(NEXPERIA, "nexperia")
    rules = tmp_path / "rules.yaml"
    first = feed_host.serve("/a", scmp_feed())
    rules.write_text(
        f"feeds:\n  - id: a\n    url: {first}\nchannels:\n  - channel: {NEXPERIA}\n    keywords: [x]\n"
    )
    env = environment_from(
        {"SLACK_BOT_TOKEN": slack.state.token, "SLACK_API_URL": slack.url, "BOT_RULES": str(rules)}, tmp_path
    )
    app = build_app(env)
    with scheduler_noting_polls(app, rules_check_seconds=0.05) as polled:
        assert polled["a"].wait(timeout=30)
        second = feed_host.serve("/b", scmp_feed())
        rules.write_text(rules.read_text().replace("channels:", f"  - id: b\n    url: {second}\nchannels:"))
        assert polled["b"].wait(timeout=30), "the new feed was not polled"
    assert [feed.id for feed in app.rules.feeds] == ["a", "b"]


@contextmanager
def scheduler_noting_polls(app, *, rules_check_seconds: float) -> Iterator[dict[str, threading.Event]]:
    """Runs the real scheduler on `app`, with an event per feed (a, b) set once that feed was polled; the
    scheduler has stopped, cleanly, when the block ends."""
    polled = {feed_id: threading.Event() for feed_id in ("a", "b")}
    poll = app.poll

    def noting_poll(feed):
        report = poll(feed)
        polled[feed.id].set()
        return report

    app.poll = noting_poll
    stop = threading.Event()
    runner = threading.Thread(
        target=run_scheduler, args=(app, stop), kwargs={"rules_check_seconds": rules_check_seconds}
    )
    runner.start()
    try:
        yield polled
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()


def write_private_feed_rules(folder: Path, feed_url: str) -> Path:
    rules = folder / "rules.yaml"
    rules.write_text(
        "settings:\n  allow_private_feeds: true\n"  # the feed host is on loopback
        f"feeds:\n  - id: a\n    url: {feed_url}\nchannels:\n  - channel: {NEXPERIA}\n    keywords: [x]\n"
    )
    return rules


def test_a_feed_added_from_slack_is_polled_at_once_without_waiting_for_the_rules_check(
    tmp_path: Path, feed_host: FeedHost
) -> None:
    rules = write_private_feed_rules(tmp_path, feed_host.serve("/a", scmp_feed()))
    app = build_app(environment_from({"BOT_RULES": str(rules)}, tmp_path), stdout=io.StringIO())
    with scheduler_noting_polls(app, rules_check_seconds=3600) as polled:
        assert polled["a"].wait(timeout=30)
        app.store.add_feed(AddedFeed("b", feed_host.serve("/b", scmp_feed()), "U1", utc_now()))
        app.feeds_changed()  # what /feeds add-feed does once the feed is stored
        assert polled["b"].wait(timeout=30), "the feed added from Slack was not polled"
    assert app.resync_jobs is None  # nothing reschedules on a stopped scheduler


def test_the_jobs_follow_the_feeds_added_and_removed_from_slack(tmp_path: Path, feed_host: FeedHost) -> None:
    rules = write_private_feed_rules(tmp_path, feed_host.serve("/a", scmp_feed()))
    app = build_app(environment_from({"BOT_RULES": str(rules)}, tmp_path), stdout=io.StringIO())
    scheduler = BackgroundScheduler(timezone="UTC")  # not started: its jobs can be looked at
    app.resync_jobs = lambda: sync_feed_jobs(scheduler, app, utc_now())
    try:
        app.resync_jobs()
        assert [job.id for job in scheduler.get_jobs()] == ["feed:a"]
        app.store.add_feed(AddedFeed("b", feed_host.url("/b"), "U1", utc_now()))
        app.feeds_changed()
        assert [job.id for job in scheduler.get_jobs()] == ["feed:a", "feed:b"]
        app.store.remove_feed("b")
        app.feeds_changed()
        assert [job.id for job in scheduler.get_jobs()] == ["feed:a"]
    finally:
        app.close()


def read_until(process: subprocess.Popen, *markers: str, timeout: float) -> str:
    """Reads the process's stderr until every marker has appeared on some line (or the deadline passes)."""
    waiting = set(markers)
    seen = []
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
        waiting = {marker for marker in waiting if marker not in line}
        if not waiting:
            return "".join(seen)
    raise AssertionError(f"no {sorted(waiting)} within {timeout}s; stderr so far:\n{''.join(seen)}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_finishes_and_saves_state(tmp_path: Path, signum: int) -> None:
    db = tmp_path / "state.json"
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "BOT_RULES": str(DEMO_RULES),
        "BOT_DB": str(db),
        "PORT": "0",  # /healthz on a free port: tests run side by side
        "METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = read_until(
            process,
            "poll feed=scmp-semiconductors status=ok",
            "listening port=",
            "detail listening host=127.0.0.1",
            timeout=30,
        )
        port = re.search(r"listening port=(\d+)", started)
        detail_port = re.search(r"detail listening host=127\.0\.0\.1 port=(\d+)", started)
        assert port and detail_port, started
        public = json.loads(urlopen(f"http://127.0.0.1:{port.group(1)}/healthz", timeout=10).read())
        assert public == {"status": "ok"}
        health = json.loads(urlopen(f"http://127.0.0.1:{detail_port.group(1)}/healthz", timeout=10).read())
        assert health["status"] == "ok" and health["mode"] == "console"
        assert health["feeds"]["scmp-semiconductors"]["items_seen"] == 50
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "stopped; state saved" in stderr
    assert "Traceback" not in stderr
    assert open_store(db).seen_count("scmp-semiconductors") == 50

    again = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--once"], cwd=REPO, env=environ, capture_output=True, text=True
    )
    assert again.returncode == 0 and "▶" not in again.stdout


def test_run_serves_signed_slash_commands_beside_the_scheduler(tmp_path: Path, slack: SlackStandIn) -> None:
    """The real entry point in HTTP mode: SLACK_SIGNING_SECRET set, /feeds answered on PORT."""
    from tests.test_slack_app import SECRET, sign, wait_for

    slack.add_channel("C0CHIPS01", "chip-supply-chain")
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "SLACK_SIGNING_SECRET": SECRET,
        "BOT_RULES": str(DEMO_RULES),
        "BOT_DB": str(tmp_path / "state.json"),
        "PORT": "0",
        "METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"], cwd=REPO, env=environ, stderr=subprocess.PIPE, text=True
    )
    try:
        started = read_until(
            process, "listening port=", "poll feed=scmp-semiconductors status=ok", timeout=30
        )
        port = re.search(r"listening port=(\d+) paths=/healthz, /slack/events", started)
        assert port, started
        body = (
            b"command=%2Ffeeds&text=search+nexperia&channel_id=C0CHIPS01&user_id=U0ALICE01&"
            + urlencode({"response_url": slack.response_url()}).encode()
        )
        request = Request(
            f"http://127.0.0.1:{port.group(1)}/slack/events",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
        )
        answer = json.loads(urlopen(request, timeout=10).read())
        assert answer == {"text": "Working on it…", "response_type": "ephemeral"}  # a search: slow work
        wait_for(lambda: slack.responses)
        [late] = slack.responses
        assert late["response_type"] == "ephemeral" and "Newest items matching nexperia" in late["text"]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "stopped; state saved" in stderr
    assert SECRET not in stderr and slack.state.token not in stderr


class _HeldThenFailing(BaseHTTPRequestHandler):
    arrived: threading.Event
    release: threading.Event

    def do_GET(self) -> None:
        self.arrived.set()
        self.release.wait(timeout=30)
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_stopping_during_a_failing_poll_finishes_and_saves(tmp_path: Path) -> None:
    arrived, release = threading.Event(), threading.Event()
    handler = type("Handler", (_HeldThenFailing,), {"arrived": arrived, "release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: slow\n    url: http://127.0.0.1:{server.server_address[1]}/feed\n"
        f"  - id: sample\n    url: {REPO / 'bot' / 'sample' / 'scmp-semiconductors.xml'}\n"
        "channels:\n  - channel: C1\n    keywords: [Nexperia]\n"
    )
    app = build_app(environment_from({"BOT_RULES": str(rules)}, tmp_path), stdout=io.StringIO())
    stop = threading.Event()
    runner = threading.Thread(target=run_scheduler, args=(app, stop))
    runner.start()
    try:
        assert arrived.wait(timeout=30)
        stop.set()  # SIGTERM while the failing poll is in flight
        release.set()
        runner.join(timeout=30)
        assert not runner.is_alive(), "shutdown hung"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert app.store.feed_health("slow").failures == 1
    assert (
        open_store(tmp_path / "data" / "state.json").seen_count("sample") == 50
    )  # the healthy feed was saved


def write_single_feed_rules(folder: Path, url: str, interval: str) -> Path:
    rules = folder / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: f\n    url: {url}\n    interval: {interval}\n"
        "channels:\n  - channel: C1\n    keywords: [x]\n"
    )
    return rules


def test_a_failing_feed_backs_off_and_recovers(tmp_path: Path, feed_host: FeedHost, clock: Clock) -> None:
    rules = write_single_feed_rules(tmp_path, feed_host.serve("/feed", scmp_feed()), "2m")
    app = build_app(environment_from({"BOT_RULES": str(rules)}, tmp_path), now=clock, stdout=io.StringIO())
    feed = app.rules.feeds[0]
    feed_host.fail_next("/feed", 503, times=2)

    def requests() -> int:
        return len(feed_host.requests_for("/feed"))

    assert app.poll_when_due(feed).status == "error"  # failure 1: next try one interval later
    clock.advance(minutes=2)
    assert app.poll_when_due(feed).status == "error"  # failure 2: next try two intervals later
    clock.advance(minutes=2)
    assert app.poll_when_due(feed) is None and requests() == 2  # backing off: not even fetched
    clock.advance(minutes=2)
    assert app.poll_when_due(feed).status == "ok"
    clock.advance(minutes=2)
    assert app.poll_when_due(feed).status == "not_modified"  # recovered: back to every interval
    app.close()


def test_a_restart_remembers_a_failing_feeds_backoff_and_error(
    tmp_path: Path, feed_host: FeedHost, clock: Clock
) -> None:
    rules = write_single_feed_rules(tmp_path, feed_host.serve("/feed", scmp_feed()), "2m")
    env = environment_from({"BOT_RULES": str(rules)}, tmp_path)
    feed_host.fail_next("/feed", 503, times=2)
    app = build_app(env, now=clock, stdout=io.StringIO())
    app.poll_when_due(app.rules.feeds[0])
    clock.advance(minutes=2)
    app.poll_when_due(app.rules.feeds[0])  # failure 2: next try four minutes later
    app.close()

    clock.advance(minutes=2)
    app = build_app(env, now=clock, stdout=io.StringIO())  # a restart
    feed = app.status()["feeds"]["f"]
    assert feed["last_error"] == "HTTP 503" and feed["consecutive_failures"] == 2
    assert app.status()["status"] == "failing"
    assert app.poll_when_due(app.rules.feeds[0]) is None  # still backing off
    clock.advance(minutes=2)
    assert app.poll_when_due(app.rules.feeds[0]).status == "ok"
    assert app.status()["status"] == "ok" and app.status()["feeds"]["f"]["last_error"] is None
    app.close()
    assert len(feed_host.requests_for("/feed")) == 3


def test_a_feed_hosts_retry_after_is_honoured_up_to_15_minutes(
    tmp_path: Path, feed_host: FeedHost, clock: Clock
) -> None:
    rules = write_single_feed_rules(tmp_path, feed_host.serve("/feed", b"<rss/>"), "1m")
    app = build_app(environment_from({"BOT_RULES": str(rules)}, tmp_path), now=clock, stdout=io.StringIO())
    feed_host.fail_next("/feed", 429, headers={"Retry-After": "86400"})
    app.poll_when_due(app.rules.feeds[0])
    assert app.next_poll_at(app.rules.feeds[0]) == clock.now + timedelta(minutes=15)
    app.close()
