"""`run`: the scheduler polls every feed, retries pending alerts, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot.app import build_app, run_scheduler
from bot.config import environment_from
from tests.conftest import REPO
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_end_to_end import NEXPERIA, write_rules

DEMO_RULES = REPO / "bot" / "sample" / "demo-rules.yaml"


class CountingSink:
    def __init__(self, sink, expected: int) -> None:
        self.sink, self.expected, self.done = sink, expected, threading.Event()
        self.count = 0

    def deliver(self, match, source, *, since=None) -> None:
        self.sink.deliver(match, source, since=since)
        self.count += 1
        if self.count >= self.expected:
            self.done.set()


def test_run_polls_every_feed_at_start_and_saves_state_on_stop(
    tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn
) -> None:
    from tests.conftest import scmp_feed

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
    saved = json.loads((tmp_path / "data" / "state.json").read_text())
    assert len(next(iter(saved["feeds"].values()))["seen"]) == 50
    assert len(slack.posts) == 3


def read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    """Reads the process's stderr until a line contains `marker` (or the deadline passes)."""
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
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout}s; stderr so far:\n{''.join(seen)}")


def test_sigterm_finishes_and_saves_state(tmp_path: Path) -> None:
    db = tmp_path / "state.json"
    environ = {"PATH": os.environ.get("PATH", "/usr/bin"), "BOT_RULES": str(DEMO_RULES), "BOT_DB": str(db)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "run"],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_until(process, "poll feed=scmp-semiconductors status=ok", timeout=30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "stopped; state saved" in stderr
    assert "Traceback" not in stderr
    assert json.loads(db.read_text())["feeds"]

    again = subprocess.run(
        [sys.executable, "-m", "bot", "run", "--once"], cwd=REPO, env=environ, capture_output=True, text=True
    )
    assert again.returncode == 0 and "▶" not in again.stdout
