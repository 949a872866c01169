"""Every reply within Slack's limits: the shared reply builder (order kept, no cut escapes, links or
mentions, "…and N more" where it stops), and the replies that grew past them, through the signed endpoint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import richtext as rich
from bot.model import Item, Subscription
from bot.replies import MAX_BLOCKS, SECTION_LIMIT, build_reply, cut_point
from tests.conftest import Clock
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn, block_problem, visible_text
from tests.test_oncall import POLICY, OnCallWorld
from tests.test_slack_app import CHIPS, Bot, start_bot

# Pieces whose every character must stay in one block: escapes, links, mentions, dates.
ATOMS = st.sampled_from(
    [
        "&lt;",
        "&gt;",
        "&amp;",
        "<https://example.com/a?b=1&amp;c=2|a link with words>",
        "<@U0123ABCD>",
        "<!subteam^S0123>",
        "<#C0123ABCD>",
        "<!date^1780048888^{date_short_pretty} {time}|2026-05-29 10:01 UTC>",
    ]
)
WORDS = st.sampled_from(["ab c", "x*y_ ", "`z`~", "• ", "\n", "word " * 40])
LINE = st.lists(ATOMS | WORDS, min_size=1, max_size=40).map("".join)
# Lines over the section limit: a short line repeated (cheap to make and to shrink).
LONG_LINE = st.tuples(LINE, st.integers(min_value=2, max_value=60)).map(lambda pair: pair[0] * pair[1])
_MARKUP = re.compile(r"<[^<>]*>|&(?:lt|gt|amp);")


def is_whole(text: str) -> bool:
    """No escape, link or mention is cut: every < is closed in the same block, every & is a whole escape."""
    rest = _MARKUP.sub("", text)
    return "<" not in rest and ">" not in rest and "&" not in rest


def block_texts(blocks: tuple[dict[str, object], ...]) -> list[str]:
    return [visible_text([dict(block)]) for block in blocks]


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(LINE | LONG_LINE, min_size=1, max_size=80))
def test_the_reply_builder_keeps_order_and_never_cuts_an_escape_a_link_or_a_mention(lines) -> None:
    reply = build_reply(lines)
    assert block_problem(list(reply.blocks)) is None
    assert len(reply.blocks) <= MAX_BLOCKS
    texts = block_texts(reply.blocks)
    if not texts:  # nothing to show: no empty block either (Slack refuses those)
        assert not "".join(lines).strip()
        return
    assert all(is_whole(text) for text in texts)
    more = re.fullmatch(r"…and (\d+) more lines? \(.*\)\.", texts[-1])
    shown = texts[:-1] if more else texts
    # In order, nothing lost or repeated: the blocks read as the lines, up to where the reply stops.
    squeezed = re.sub(r"\s+", "", "".join(shown))
    left = int(more.group(1)) if more else 0
    assert 0 <= left <= len(lines)
    expected = re.sub(r"\s+", "", "".join(lines[: len(lines) - left]))
    assert squeezed.startswith(expected)
    assert len(squeezed) - len(expected) <= (len(re.sub(r"\s+", "", lines[len(lines) - left])) if left else 0)
    assert is_whole(reply.text) and len(reply.text) <= 3900


def test_a_line_over_the_section_limit_comes_after_the_lines_above_it() -> None:
    long = "word &lt;tag&gt; " * 400  # 6,800 characters
    reply = build_reply(["first", "second", long, "last"])
    texts = block_texts(reply.blocks)
    assert texts[0] == "first\nsecond"
    assert texts[-1].endswith("last")
    assert all(len(text) <= SECTION_LIMIT and is_whole(text) for text in texts)


def test_a_cut_never_falls_inside_an_escape_or_a_link() -> None:
    text = "x" * 2998 + "&lt;" + "y" * 10
    assert text[: cut_point(text, 3000)] == "x" * 2998
    linked = "a " * 1400 + "<https://example.com/" + "p" * 300 + "|label>"
    assert linked[: cut_point(linked, 3000)].endswith("a")


def test_rich_lines_keep_feed_text_literal_and_in_order() -> None:
    lines = ["heading", *[(rich.text(f"• {n} *not bold* " + "x" * 40),) for n in range(400)]]
    reply = build_reply(lines)
    assert block_problem(list(reply.blocks)) is None
    elements = [
        e for b in reply.blocks if b["type"] == "rich_text" for s in b["elements"] for e in s["elements"]
    ]
    shown = "".join(e["text"] for e in elements)
    numbers = [int(n) for n in re.findall(r"• (\d+) \*not bold\*", shown)]
    assert numbers == list(range(len(numbers))) and 50 < len(numbers) < 400
    assert (
        visible_text([reply.blocks[-1]])
        == f"…and {400 - len(numbers)} more lines (a reply to a command is kept short)."
    )


# -- through the signed endpoint ---------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> OnCallWorld:
    return OnCallWorld(tmp_path, feed_host, slack, clock)


@pytest.fixture
def oncall_bot(world: OnCallWorld) -> Iterator[Bot]:
    yield from world.start()


def test_oncall_with_750_open_alerts_answers_within_slacks_limits_oldest_first(
    world, oncall_bot: Bot
) -> None:
    alert = world.alert(oncall_bot)
    [first] = oncall_bot.app.store.open_alerts(POLICY)
    assert first.ts == alert["ts"]
    for n in range(1, 750):
        item = Item(
            feed_id="scmp",
            key=f"k{n}",
            link=f"https://www.scmp.com/tech/{n}",
            title=f"Story {n:03} *not bold* <b> & `no code`",
        )
        opened = replace(
            first, id=f"a{n}", ts=f"{n}.0", item=item, posted_at=first.posted_at + timedelta(seconds=n)
        )
        oncall_bot.app.store.record_delivery(POLICY, item, opened.posted_at, open_alert=opened)
    response = oncall_bot.command("oncall", channel=POLICY)
    assert response.status_code == 200
    body = response.json()
    assert block_problem(body["blocks"]) is None  # Slack would take it: at most 50 blocks, bounded text
    shown = visible_text(body["blocks"])
    assert shown.startswith("*Open alerts in <#C0POLICY1>* (750, oldest first)")
    numbers = [int(n) for n in re.findall(r"\|Story (\d+) \*not bold\* <b> & `no code`>", shown)]
    assert numbers == list(range(1, len(numbers) + 1))  # oldest first, none skipped, feed text literal
    assert f"…and {749 - len(numbers)} more lines" in shown


def test_list_with_300_subscriptions_answers_within_slacks_limits(tmp_path, feed_host, slack, clock) -> None:
    for bot in start_bot(tmp_path, feed_host, slack, clock):
        at = clock()
        subscriptions = [Subscription(CHIPS, f"term{n:03} <&>", None, "U0ALICE01", at) for n in range(300)]
        bot.app.store.add_subscriptions(subscriptions)
        bot.app.refresh_rules()
        response = bot.command("list", channel=CHIPS)
        assert response.status_code == 200
        body = response.json()
        assert block_problem(body["blocks"]) is None
        shown = visible_text(body["blocks"])
        listed = [int(n) for n in re.findall(r"`term(\d{3}) &lt;&amp;&gt;`", shown)]
        assert listed == list(range(len(listed))) and len(listed) >= 50
        more = re.search(r"…and (\d+) more lines", shown)
        assert more is not None and int(more.group(1)) >= 300 - len(listed)
        assert all(is_whole(text) for text in block_texts(tuple(body["blocks"])))
