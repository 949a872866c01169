"""The real process, killed with SIGKILL at the worst moment: while Slack holds the answer to a post it has
already carried out. The next start must find that post in the channel instead of posting it again."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.conftest import REPO, SAMPLE_FEED, rss_item, scmp_feed
from tests.feed_host import running_feed_host
from tests.slack_standin import SlackStandIn, running_slack

NEXPERIA, HUAWEI = "CNEXPERIA1", "CHUAWEI01"


RUN_ONCE = [sys.executable, "-m", "bot", "run", "--once"]


def bot_environment(slack: SlackStandIn, rules: Path, folder: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "SLACK_BOT_TOKEN": slack.state.token,
        "SLACK_API_URL": slack.url,
        "BOT_RULES": str(rules),
        "BOT_DB": str(folder / "state.json"),
    }


def test_a_kill_while_a_post_is_in_flight_neither_loses_nor_repeats_it(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"feeds:\n  - id: scmp\n    url: {SAMPLE_FEED}\n"
        "channels:\n  - channel: CNEXPERIA1\n    keywords: [Nexperia]\n"
    )
    # Real time: the restarted process searches the channel's history by the time of its first attempt.
    with running_slack() as slack:
        slack.add_channel("CNEXPERIA1", "nexperia")
        environ = bot_environment(slack, rules, tmp_path)
        slack.fail_next("chat.postMessage", hang=True)
        process = subprocess.Popen(
            RUN_ONCE, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            assert slack.hanging.wait(timeout=30), "the bot never posted"
            process.kill()  # SIGKILL: no handler runs, nothing is flushed
            process.wait(timeout=10)
        finally:
            process.kill()
            slack.release()
        assert len(slack.posts) == 1  # Slack has the alert; the bot never heard so

        again = subprocess.run(RUN_ONCE, env=environ, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert "alert found in channel channel=CNEXPERIA1" in again.stderr
        assert len(slack.posts) == 1
        assert slack.calls("conversations.history")  # it looked rather than guessed


CRASH_SEED = 20261127
VERSIONS = 5  # the feed publishes this many times, two matching stories each
KILLS_PER_VERSION = 2


def test_sigkill_at_random_points_of_many_cycles_never_loses_or_repeats_an_alert(tmp_path: Path) -> None:
    """The real process over a changing feed, killed again and again: at a random Slack call (with the post
    carried out or not, the answer never heard) or after a random time (mid-fetch, mid-write, anywhere).
    After a last clean run, every story was posted exactly once to its channel."""
    rng = random.Random(CRASH_SEED)
    with running_slack() as slack, running_feed_host() as host:
        slack.add_channel(NEXPERIA, "nexperia")
        slack.add_channel(HUAWEI, "huawei")
        feed_url = host.serve("/feed", scmp_feed())
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"settings:\n  backfill: 0\nfeeds:\n  - id: scmp\n    url: {feed_url}\n"
            f"channels:\n  - channel: {NEXPERIA}\n    keywords: [Nexperia]\n"
            f"  - channel: {HUAWEI}\n    keywords: [Huawei]\n"
        )
        environ = bot_environment(slack, rules, tmp_path)

        def clean_run() -> float:
            started = time.monotonic()
            done = subprocess.run(RUN_ONCE, env=environ, cwd=REPO, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return time.monotonic() - started

        run_seconds = clean_run()  # the first poll: a baseline, nothing posted (backfill 0)
        assert slack.posts == []
        stories: list[bytes] = []
        expected: list[tuple[str, str]] = []
        kills: list[str] = []
        for version in range(1, VERSIONS + 1):
            stories[:0] = [
                rss_item(f"Nexperia story {version}", f"https://www.scmp.com/tech/nexperia-{version}"),
                rss_item(f"Huawei story {version}", f"https://www.scmp.com/tech/huawei-{version}"),
            ]
            host.serve("/feed", scmp_feed(extra_items=tuple(stories)))
            expected += [(NEXPERIA, f"Nexperia story {version}"), (HUAWEI, f"Huawei story {version}")]
            for _ in range(KILLS_PER_VERSION):
                # The three kinds in turn, each point within its kind at random.
                kind = ("post landed", "call held", "any time")[len(kills) % 3]
                at_call = kind != "any time"
                if kind == "post landed":  # Slack has the post; the bot dies waiting for the answer
                    number = rng.randint(1, 2)
                    slack.hang_call(number, carry_out=True, method="chat.postMessage")
                    kills.append(f"post {number} landed")
                elif kind == "call held":  # any call, not carried out
                    number = rng.randint(1, 6)
                    slack.hang_call(number, carry_out=False)
                    kills.append(f"call {number} held")
                process = subprocess.Popen(
                    RUN_ONCE, env=environ, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                try:
                    if at_call:
                        # Until the call hangs, or the cycle needed fewer calls and ended by itself.
                        deadline = time.monotonic() + 30
                        while not slack.hanging.wait(0.02) and process.poll() is None:
                            assert time.monotonic() < deadline, "the bot neither hung nor ended"
                    else:
                        delay = rng.uniform(0.1, run_seconds)
                        kills.append(f"{delay:.2f}s in")
                        process.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    pass
                finally:
                    process.kill()  # SIGKILL: no handler runs, nothing is flushed
                    process.wait(timeout=10)
                    slack.state.hang_after = None
                    slack.release()
        clean_run()  # the bot back for good

        posted = Counter((post["channel"], post["text"].split(" https://")[0]) for post in slack.posts)
        repeated = {story: n for story, n in posted.items() if n > 1}
        assert not repeated, f"posted twice with kills {kills}: {repeated}"
        assert sorted(posted) == sorted(expected), f"lost with kills {kills}"
