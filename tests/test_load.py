"""Slash commands under load, through the real HTTP endpoint with real signatures, while feeds are polled:
Slack gives an app 3 seconds to answer a command before the user sees an error."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.slackapp import WORKING
from tests.conftest import Clock, rss_item
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_slack_app import CHINA, CHIPS, Bot, start_bot, wait_for

RATE = 50  # commands a second
SECONDS = 20
SLACK_DEADLINE = 3.0
MEMBERS = 25  # commands come from many people, as in a workspace (one person has at most 2 slow ones going)

COMMANDS = [
    ("help", CHIPS),
    ("list", CHIPS),
    ("search nexperia", CHIPS),
    ("latest 5", CHINA),
    ("test Nexperia export controls on chips", CHIPS),
    ("search days:7 huawei", CHINA),
    ("subscribe query:Huawei NEAR/3 chip*", CHINA),
    ("unsubscribe all", CHINA),
    ("list", CHINA),
    ("nonsense verb", CHIPS),
]


@pytest.fixture
def loaded_bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start_bot(tmp_path, feed_host, slack, clock)


def test_fifty_signed_commands_a_second_for_twenty_seconds_are_all_answered_in_time_while_polling(
    loaded_bot: Bot,
) -> None:
    bot = loaded_bot
    stop_polling = threading.Event()
    polls = 0

    def keep_polling() -> None:
        nonlocal polls
        while not stop_polling.is_set():
            bot.publish(rss_item(f"Nexperia story {polls}", f"https://www.scmp.com/tech/nexperia-{polls}"))
            bot.poll()
            polls += 1

    def send(index: int, due: float) -> tuple[float, int, str]:
        text, channel = COMMANDS[index % len(COMMANDS)]
        try:
            response = bot.command(text, channel=channel, user=f"U0LOAD{index % MEMBERS:03}")
        except httpx.HTTPError as e:
            return time.monotonic() - due, 0, f"{type(e).__name__}: {e}"
        return time.monotonic() - due, response.status_code, response.json().get("text", "")

    poller = threading.Thread(target=keep_polling, name="poller")
    poller.start()
    pace = threading.Event()  # never set: waiting on it paces the sender without a bare sleep
    results: list[concurrent.futures.Future[tuple[float, int, str]]] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=48) as senders:
            start = time.monotonic()
            for index in range(RATE * SECONDS):
                due = start + index / RATE
                pace.wait(max(0.0, due - time.monotonic()))
                results.append(senders.submit(send, index, due))
    finally:
        stop_polling.set()
        poller.join(timeout=30)
    answers = [future.result() for future in results]
    latencies = sorted(latency for latency, _, _ in answers)
    slow = [answer for answer in answers if answer[0] > SLACK_DEADLINE or answer[1] != 200]
    assert not slow, f"{len(slow)} of {len(answers)} late or failed, e.g. {slow[:3]}"
    assert polls >= 5  # polling went on throughout
    assert all(text for _, _, text in answers)
    # Slow commands were acknowledged with "Working on it…": each one's answer follows through response_url.
    deferred = sum(1 for _, _, text in answers if text == WORKING)
    wait_for(lambda: len(bot.slack.responses) >= deferred, timeout=60)
    refused = sum(1 for _, _, text in answers if "slow commands" in text)
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"\n{len(answers)} commands, {polls} polls: p50 {p50:.3f}s p99 {p99:.3f}s; "
        f"{deferred} answered through response_url, {refused} refused as too many slow commands"
    )
