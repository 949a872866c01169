"""Hostile rules and items against the matcher (issue 12, items 3, 4 and 8), through the bot's real entry
points: items from the loopback feed host, signed slash commands on the real HTTP endpoint, and
`python -m bot check` for rules.yaml."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.feed_limits import MAX_SUMMARY_CHARS
from bot.limits import (
    MAX_CHANNEL_SUBSCRIPTIONS,
    MAX_QUERY_CHARS,
    MAX_QUERY_DEPTH,
    MAX_TERM_CHARS,
    MAX_TERMS_PER_COMMAND,
    MAX_USER_SUBSCRIPTIONS,
)
from bot.model import Subscription
from tests.conftest import Clock, rss_item
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_slack_app import ALICE, BOB, CHINA, CHIPS, OTHER, Bot, start_bot

MIB = 2**20


def start(
    tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock, channels: str
) -> Iterator[Bot]:
    """The bot on a loopback port with these `channels:` entries, after its first poll (nothing posted)."""
    yield from start_bot(tmp_path, feed_host, slack, clock, channels=channels)


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start(tmp_path, feed_host, slack, clock, f"  - channel: {CHIPS}\n    keywords: [Nexperia]\n")


def posted_titles(bot: Bot, channel: str) -> list[str]:
    """The titles of the alerts posted to `channel` (their notification text begins with the title)."""
    return [post["text"].split(" https://")[0].split("\n")[0] for post in bot.slack.posts_to(channel)]


# -- item 4: overlapping keyword hits ---------------------------------------------------------------------


@pytest.fixture
def bot_of_letters(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    """Thirty keywords, each a prefix of the next: a, aa, aaa, …"""
    letters = ", ".join("a" * n for n in range(1, 31))
    yield from start(tmp_path, feed_host, slack, clock, f"  - channel: {CHIPS}\n    keywords: [{letters}]\n")


def test_thirty_overlapping_terms_against_a_run_of_one_letter_take_little_memory_and_match_right(
    bot_of_letters: Bot,
) -> None:
    """Every literal occurs at nearly every position of "aaaa…": listing each occurrence of each term took
    terms x characters of memory (4.6 GiB for a million characters) though none is a word there."""
    bot = bot_of_letters
    hostile = rss_item("Quarterly results", "https://www.scmp.com/tech/hostile", description="a" * 60_000)
    wanted = rss_item("Aa battery recall widens", "https://www.scmp.com/tech/wanted")
    bot.publish(hostile, wanted)
    tracemalloc.start()
    try:
        bot.poll()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert posted_titles(bot, CHIPS) == ["Aa battery recall widens"]
    # The feed document alone is about 0.2 MiB; listing every occurrence took over 150 MiB here.
    assert peak < 40 * MIB, f"peak {peak / MIB:.0f} MiB"


# -- item 3: NEAR over many occurrences -------------------------------------------------------------------


@pytest.fixture
def bot_with_near(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start(
        tmp_path, feed_host, slack, clock, f"  - channel: {CHIPS}\n    query: huawei NEAR/3 chip*\n"
    )


def test_a_near_query_over_a_summary_repeating_both_terms_thousands_of_times_matches_right(
    bot_with_near: Bot,
) -> None:
    """The issue's summary, scaled down to what a summary keeps (10,000 characters): both terms a thousand
    times, too far apart; and the same with the one close pair at the very end."""
    bot = bot_with_near
    apart = "huawei " * 700 + "and then the long story goes on " * 3 + "chip " * 900
    together_at_the_end = "huawei " * 1400 + "chips"
    assert len(apart) < MAX_SUMMARY_CHARS and len(together_at_the_end) < MAX_SUMMARY_CHARS
    bot.publish(
        rss_item("Apart", "https://www.scmp.com/tech/apart", description=apart),
        rss_item("Together at the end", "https://www.scmp.com/tech/end", description=together_at_the_end),
    )
    bot.poll()
    assert posted_titles(bot, CHIPS) == ["Together at the end"]


# -- item 8: limits on what a rule may ask ----------------------------------------------------------------


def test_subscribe_refuses_a_term_or_a_query_over_its_limit_and_names_the_limit(bot: Bot) -> None:
    refusals = {
        "subscribe " + "x" * 20_000: f"a term is at most {MAX_TERM_CHARS}",
        "subscribe " + " ".join(f"t{n}" for n in range(MAX_TERMS_PER_COMMAND + 1)): (
            f"one subscribe takes at most {MAX_TERMS_PER_COMMAND}"
        ),
        "subscribe query:" + " OR ".join(["huawei"] * 80): f"a query is at most {MAX_QUERY_CHARS}",
        "subscribe query:" + "(" * (MAX_QUERY_DEPTH + 1) + "huawei" + ")" * (MAX_QUERY_DEPTH + 1): (
            f"a query is at most {MAX_QUERY_DEPTH} levels"
        ),
        "subscribe query:huawei NEAR/2 " + "y" * 150: f"a term is at most {MAX_TERM_CHARS}",
    }
    for command, limit in refusals.items():
        reply = bot.say(command, channel=CHINA)
        assert limit in reply, reply
        assert len(reply) < 600  # a refusal quotes the input cut short, not 20,000 characters back
    assert bot.app.store.subscriptions() == []
    # At the limits exactly, accepted.
    at_limits = "subscribe " + " ".join("z" * MAX_TERM_CHARS + str(n) for n in range(MAX_TERMS_PER_COMMAND))
    assert "Cannot use" in bot.say(at_limits, channel=CHINA)  # 101 characters each
    at_limits = "subscribe " + " ".join(
        f"{n:03}" + "z" * (MAX_TERM_CHARS - 3) for n in range(MAX_TERMS_PER_COMMAND)
    )
    assert "now gets alerts for" in bot.say(at_limits, channel=CHINA)
    deepest = "(" * (MAX_QUERY_DEPTH - 1) + "NOT opinion huawei" + ")" * (MAX_QUERY_DEPTH - 1)
    assert "now gets alerts for" in bot.say("subscribe query:" + deepest, channel=CHINA)
    assert len(bot.app.store.subscriptions(CHINA)) == MAX_TERMS_PER_COMMAND + 1


def test_subscriptions_stop_at_100_a_channel_and_50_a_person_personal_watch_included(bot: Bot) -> None:
    def terms(prefix: str, count: int = MAX_TERMS_PER_COMMAND) -> str:
        return " ".join(f"{prefix}{n}" for n in range(count))

    # A channel: five people, twenty terms each, is the most it takes.
    for person in range(MAX_CHANNEL_SUBSCRIPTIONS // MAX_TERMS_PER_COMMAND):
        assert "now gets alerts" in bot.say(
            "subscribe " + terms(f"p{person}t"), channel=CHINA, user=f"U0P{person}"
        )
    refused = bot.say("subscribe one-more", channel=CHINA, user=ALICE)
    assert f"{MAX_CHANNEL_SUBSCRIPTIONS} is the most a channel takes" in refused
    assert "Already subscribed" in bot.say("subscribe p0t1", channel=CHINA, user=ALICE)  # nothing new: fine
    assert "Removed" in bot.say("unsubscribe p0t1", channel=CHINA, user=ALICE)
    assert "now gets alerts" in bot.say("subscribe one-more", channel=CHINA, user=ALICE)

    # A person: 20 + 20 in channels and 10 in their personal watch.
    assert "now gets alerts" in bot.say("subscribe " + terms("b"), channel=CHIPS, user=BOB)
    assert "now gets alerts" in bot.say("subscribe " + terms("c"), channel=OTHER, user=BOB)
    assert "now gets alerts" in bot.say("subscribe " + terms("d", 9), channel="D0BOBDM01", user=BOB)
    assert "now gets alerts" in bot.say("subscribe e0", channel="D0BOBDM01", user=BOB)  # the 50th
    refused = bot.say("subscribe e1", channel="D0BOBDM01", user=BOB)
    assert f"{MAX_USER_SUBSCRIPTIONS} is the most one person may add" in refused
    assert "Nothing was changed" in refused
    assert len([s for s in bot.app.store.subscriptions() if s.added_by == BOB]) == MAX_USER_SUBSCRIPTIONS


def test_a_poll_that_starts_after_a_subscribe_is_answered_matches_with_it(bot: Bot) -> None:
    assert "now gets alerts" in bot.say("subscribe query:huawei NEAR/5 chip*", channel=CHINA)
    bot.publish(rss_item("Huawei unveils a new AI chip", "https://www.scmp.com/tech/huawei-ai-chip"))
    bot.poll()
    assert posted_titles(bot, CHINA) == ["Huawei unveils a new AI chip"]


def test_a_stored_term_over_the_limit_loads_is_skipped_with_a_log_line_and_can_be_unsubscribed(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """State written before the limits: the bot still starts and polls; the term is never matched (its
    automaton is what froze the process), and the log says how to remove it."""
    long_term = "huawei " + "x" * 300
    long_query = "huawei OR " + " OR ".join(["chip"] * 120)
    bot.app.store.add_subscriptions(
        [
            Subscription(CHINA, long_term, None, ALICE, bot.clock()),
            Subscription(CHINA, long_query, None, ALICE, bot.clock(), is_query=True),
        ]
    )
    caplog.set_level(logging.WARNING)
    bot.say("subscribe Huawei", channel=CHINA)  # rebuilds the rules from the stored subscriptions
    skipped = [r.getMessage() for r in caplog.records if "subscription skipped" in r.getMessage()]
    assert len(skipped) == 2
    assert f"a term is at most {MAX_TERM_CHARS}" in skipped[0]
    assert '/feeds unsubscribe "huawei xxx' in skipped[0]
    assert f"a query is at most {MAX_QUERY_CHARS}" in skipped[1] and "/feeds unsubscribe query:" in skipped[1]

    bot.publish(rss_item("Huawei unveils a new AI chip", "https://www.scmp.com/tech/huawei-ai-chip"))
    bot.poll()
    assert posted_titles(bot, CHINA) == ["Huawei unveils a new AI chip"]
    assert "Removed" in bot.say(f'unsubscribe "{long_term}"', channel=CHINA)
    assert "Removed" in bot.say(f"unsubscribe query:{long_query}", channel=CHINA)
    assert [s.term for s in bot.app.store.subscriptions(CHINA)] == ["Huawei"]


def test_check_names_the_file_line_and_field_of_a_term_or_query_over_its_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "feeds:\n  - id: a\n    url: https://example.com/a\n"
        "channels:\n"
        f"  - channel: C1\n    keywords: [fine, {'x' * 20_000}]\n"
        f"  - channel: C2\n    query: {' OR '.join(['huawei'] * 80)}\n"
        f"  - channel: C3\n    query: {'(' * 9}huawei{')' * 9}\n"
        f"  - channel: C4\n    keywords: [fine]\n    exclude: ['{'y' * 101}']\n"
    )
    assert main(["check"], environ={"BOT_RULES": str(rules)}) == 1
    problems = capsys.readouterr().err.strip().splitlines()
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{rules}:6: channels[0].keywords[1]: 'xxxx")
    assert problems[0].endswith(f"is 20,000 characters; a term is at most {MAX_TERM_CHARS}")
    assert problems[1].startswith(f"{rules}:8: channels[1].query: column 501: the query is 796 characters")
    assert problems[2].startswith(f"{rules}:10: channels[2].query: column 9: too deeply nested")
    assert problems[3].startswith(f"{rules}:13: channels[3].exclude[0]: 'yyy")
    assert all(len(problem) < 300 for problem in problems)
