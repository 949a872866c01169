"""Issue 12's "Done when", for the whole bot process: while each attack runs, a signed `/feeds help` answers
within 1 s, `/healthz` within 1 s, a good feed's alert is posted within one poll interval plus 5 s, and the
process's peak RSS stays under 300 MiB.

Each case starts the real `python -m bot run` on loopback with two feeds (a good one, which publishes a
matching item during the attack, and the attacker's), runs one attack the way it comes (the bot's port, a
signed slash command, the attacker's feed host), and watches meanwhile (tests/attacks.py). Attacks are
scaled down to what still proves the point; the bounds are not.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.attacks import (
    ATTACKED,
    ATTACKER,
    GOOD,
    INTERVAL_SECONDS,
    START_TIMEOUT,
    BotProcess,
    Outcome,
    Watch,
    answers_healthz,
    commands_in_background,
    huge_unsigned_bodies,
    seconds_until_posted,
    slowloris,
    start_bot,
    wait_until,
)
from tests.conftest import rss_item, scmp_feed
from tests.feed_host import FeedHost, running_feed_host
from tests.slack_standin import SlackStandIn, running_slack


def rss(*items: bytes) -> bytes:
    return (
        b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Attacker</title>'
        b"<link>https://attacker.example/</link><description>a feed its author controls</description>"
        + b"".join(items)
        + b"\n</channel></rss>\n"
    )


def fresh_each_poll(make_items: Callable[[int], bytes]) -> Callable[[int], bytes]:
    """The attacker's feed: an ordinary first answer (the bot's baseline), then new hostile items with new
    guids in every answer, so every poll has them to match."""
    return lambda number: rss(make_items(number) if number else ORDINARY_ITEM)


@dataclass(frozen=True)
class Run:
    """One case's running world, for the attack to aim at."""

    bot: BotProcess
    host: FeedHost  # serves both feeds (and the trickling add-feed targets)
    internal: FeedHost  # a service on another loopback port, which no feed may reach by a redirect
    slack: SlackStandIn


@dataclass(frozen=True)
class Case:
    id: str
    attacked_rule: str  # the attacked channel's entry, after `feeds: [attacker]`
    serve_attacker: Callable[[FeedHost, FeedHost], str]  # (host, internal) -> the attacker feed's URL
    attack: Callable[[Run], AbstractContextManager[None]] = lambda run: contextlib.nullcontext()
    settings: str = ""
    # The attacker's feed is fetched this many times before the good item is published: 2 when the attack
    # is in the feed (its first poll is a baseline; the second finds the hostile items).
    attacker_fetches: int = 1
    # And, for an attack that takes effect later, this holds before the good item is published.
    in_effect: Callable[[Run], bool] = lambda run: True
    attack_failed: Callable[[Run], list[str]] = lambda run: []  # what no fix may let the attack achieve
    attacker_path: str = "/attacker"


ORDINARY_ITEM = rss_item("An ordinary story", "https://attacker.example/1")


def static_attacker(host: FeedHost, internal: FeedHost) -> str:
    return host.serve("/attacker", rss(ORDINARY_ITEM))


# -- the attacks -------------------------------------------------------------------------------------------

NEAR_WORDS = 12_000  # each side of `huawei NEAR/5 chip*`: 10-20 s of quadratic NEAR here, ms when linear


def near_bait(number: int) -> bytes:
    summary = "huawei " * NEAR_WORDS + "and then much later " * 3 + "chip " * NEAR_WORDS
    return rss_item(
        f"Quarterly report {number}", f"https://attacker.example/near-{number}", description=summary
    )


OVERLAPPING_A = 120_000  # "a" * this against 30 terms a..a*30: ~3.6M overlapping hits built at once today


def overlapping_bait(number: int) -> bytes:
    return rss_item(
        f"Vowels {number}", f"https://attacker.example/a-{number}", description="a" * OVERLAPPING_A
    )


FLOOD_ITEMS = 2_000  # new matching items in every poll, every guid new each time


def flood(number: int) -> bytes:
    return b"".join(
        rss_item(f"Flood story {number}-{i}", f"https://attacker.example/flood-{number}-{i}")
        for i in range(FLOOD_ITEMS)
    )


MEGABYTES_9 = "界" * 3_000_000  # 9 MB of UTF-8 in one summary, under the 10 MiB fetch cap


def nine_megabyte_item(number: int) -> bytes:
    return rss_item(
        f"Megabyte story {number}", f"https://attacker.example/mb-{number}", description=MEGABYTES_9
    )


def trickling_add_feeds(run: Run) -> AbstractContextManager[None]:
    """Ten `/feeds add-feed` of a host that answers one byte a second (no admins set: anyone may)."""
    texts = [
        (f"add-feed {run.host.trickle(f'/slow-{n}', 1.0)} id:slow{n}", ATTACKED, f"U0EVIL{n:03d}")
        for n in range(10)
    ]
    return commands_in_background(run.bot, texts)


LONG_TERM = (
    "芯" * 8_000
)  # the 20,000 scaled down: a DFA for it alone takes ~5 s here, holding the GIL


def subscribe_freeze(run: Run) -> AbstractContextManager[None]:
    """A member subscribes one 8,000-character term, then 300 terms (no admins set: anyone may)."""
    many_terms = " ".join(f"{n:03d}" + "半导体芯片出口管制" * 6 for n in range(300))
    return commands_in_background(
        run.bot,
        [(f"subscribe {LONG_TERM}", ATTACKED, ATTACKER), (f"subscribe {many_terms}", ATTACKED, ATTACKER)],
        one_after_another=True,
    )


@contextlib.contextmanager
def searching_the_nine_megabytes(run: Run) -> Iterator[None]:
    """Any member searches the archive that now holds the 9 MB item."""
    with commands_in_background(
        run.bot, [("search 界", ATTACKED, ATTACKER), ("search story", GOOD, ATTACKER)]
    ):
        yield


def redirect_into_the_network(host: FeedHost, internal: FeedHost) -> str:
    secret = internal.serve(
        "/secret", rss(rss_item("Internal only: the on-call rota", "https://internal.example/rota"))
    )
    host.redirect("/moved", secret)
    # Named by host name, so that the redirect to 127.0.0.1 on another port plainly leaves the feed's host.
    return host.url("/moved").replace("127.0.0.1", "localhost")


def internal_service_untouched(run: Run) -> list[str]:
    reached = run.internal.requests_for("/secret")
    return [f"a redirect reached the internal service ({len(reached)} request(s))"] if reached else []


CASES = [
    # The control: the same world and watch with no attack, so a failure below is the attack's doing.
    Case("0-control-no-attack", "    keywords: [story]\n", static_attacker),
    Case(
        "1-huge-unsigned-bodies",
        "    keywords: [story]\n",
        static_attacker,
        attack=lambda run: huge_unsigned_bodies(run.bot, connections=6, mib=64),
    ),
    Case("2-slowloris", "    keywords: [story]\n", static_attacker, attack=lambda run: slowloris(run.bot)),
    Case(
        "2-add-feed-of-a-trickling-host",
        "    keywords: [story]\n",
        static_attacker,
        attack=trickling_add_feeds,
        settings="  allow_private_feeds: true\n",
    ),
    Case(
        "3-near-over-a-long-summary",
        "    query: 'huawei NEAR/5 chip*'\n",
        lambda host, internal: host.serve_each("/attacker", fresh_each_poll(near_bait)),
        attacker_fetches=2,
    ),
    Case(
        "4-overlapping-keyword-hits",
        "    keywords: [" + ", ".join("a" * n for n in range(1, 31)) + "]\n",
        lambda host, internal: host.serve_each("/attacker", fresh_each_poll(overlapping_bait)),
        attacker_fetches=2,
    ),
    Case(
        "5-flood-of-new-guids-each-poll",
        "    keywords: [flood]\n",
        lambda host, internal: host.serve_each("/attacker", fresh_each_poll(flood)),
        attacker_fetches=2,
        # The flood is being posted (5 alone, the rest grouped, today), or three hostile polls are over.
        in_effect=lambda run: (
            len(run.slack.posts_to(ATTACKED)) > 5 or len(run.host.requests_for("/attacker")) >= 4
        ),
    ),
    Case(
        "5-a-9-mb-item-then-search",
        "    keywords: [megabyte]\n",
        lambda host, internal: host.serve_each("/attacker", fresh_each_poll(nine_megabyte_item)),
        attack=searching_the_nine_megabytes,
        attacker_fetches=3,  # the second poll, which archived the 9 MB item, is over by then
    ),
    Case(
        "7-redirect-to-another-loopback-port",
        "    keywords: [internal]\n",
        redirect_into_the_network,
        attacker_fetches=2,
        attack_failed=internal_service_untouched,
        attacker_path="/moved",
    ),
    Case(
        "8-subscribe-huge-and-many-terms", "    keywords: [story]\n", static_attacker, attack=subscribe_freeze
    ),
]


def rules_for(case: Case, good_url: str, attacker_url: str) -> str:
    return (
        f"settings:\n  backfill: 0\n  interval: {INTERVAL_SECONDS}s\n{case.settings}"
        f"feeds:\n  - id: good\n    url: {good_url}\n  - id: attacker\n    url: {attacker_url}\n"
        f"channels:\n  - channel: {GOOD}\n    feeds: [good]\n    keywords: [Nexperia]\n"
        f"  - channel: {ATTACKED}\n    feeds: [attacker]\n{case.attacked_rule}"
    )


@contextlib.contextmanager
def running_world(case: Case, folder: Path) -> Iterator[Run]:
    with running_slack() as slack, running_feed_host() as host, running_feed_host() as internal:
        slack.add_channel(GOOD, "good", member=True)
        slack.add_channel(ATTACKED, "attacked", member=True)
        slack.limit_posts(per_second=1, burst=3)  # as Slack does: a flood costs real time
        good_url = host.serve("/good", scmp_feed())
        attacker_url = case.serve_attacker(host, internal)
        bot = start_bot(folder, slack, rules_for(case, good_url, attacker_url))
        try:
            yield Run(bot, host, internal, slack)
        finally:
            bot.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_under_attack_help_and_healthz_answer_in_1s_a_good_alert_is_posted_in_time_and_rss_stays_bounded(
    case: Case, tmp_path: Path
) -> None:
    with running_world(case, tmp_path) as run:
        bot, host = run.bot, run.host
        wait_until(lambda: answers_healthz(bot), START_TIMEOUT, "/healthz to answer", bot)
        wait_until(lambda: bool(host.requests_for("/good")), START_TIMEOUT, "the good feed's first poll", bot)
        wait_until(
            lambda: len(host.requests_for(case.attacker_path)) >= case.attacker_fetches,
            START_TIMEOUT,
            f"the attacker's feed fetched {case.attacker_fetches} time(s)",
            bot,
        )
        wait_until(lambda: case.in_effect(run), START_TIMEOUT, "the attack to take effect", bot)
        # Published just after the good feed was fetched: its next poll is a whole interval away, by when
        # the attack is surely at work (a poll that slipped in first would hide it).
        fetched = len(host.requests_for("/good"))
        wait_until(
            lambda: len(host.requests_for("/good")) > fetched, START_TIMEOUT, "a poll of the good feed", bot
        )
        title = f"Nexperia story {uuid.uuid4().hex[:8]}"
        with case.attack(run):
            watch = Watch(bot).start()
            item = rss_item(title, f"https://www.scmp.com/tech/{title[-8:]}")
            host.serve("/good", scmp_feed(extra_items=(item,)))
            alert_after = seconds_until_posted(bot, GOOD, title)
            watch.stop()
        outcome = Outcome(
            watch.of("help"), watch.of("healthz"), alert_after, bot.peak_rss_mib(), bot.process.poll()
        )

    problems = outcome.problems() + case.attack_failed(run)
    print(f"\n{case.id}: {outcome.figures()}")
    assert not problems, f"{case.id}: " + "; ".join(problems) + f"\nbot log:\n{bot.log_tail()}"
