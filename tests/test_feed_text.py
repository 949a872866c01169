"""Feed text reaches Slack only where Slack takes it literally: the feed host serves titles and summaries
full of mrkdwn (`*`, `_`, `~`, backticks, pings), and every message, reply and view the bot sends holds them
only in rich_text `text`/`link` elements or plain_text, never in text Slack parses as mrkdwn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Clock, rss_item
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn, block_problem
from tests.test_slack_app import ALICE, CHIPS, Bot, start_bot, wait_for

HOSTILE_TITLE = "Nexperia *wins* _big_ ~deal~ `rm` &lt;!channel&gt;"
SHOWN_TITLE = "Nexperia *wins* _big_ ~deal~ `rm` <!channel>"  # as the reader sees it: every character
HOSTILE_NEWS = rss_item(
    HOSTILE_TITLE,
    "https://www.scmp.com/tech/nexperia-wins",
    description="Nexperia says *all* is _fine_ ~really~ `ok`",
)
FEED_WORDS = ("wins", "big", "deal", "all", "fine", "really")


def mrkdwn_and_literal(blocks: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(texts Slack parses as mrkdwn, texts it shows literally) in these blocks."""
    parsed: list[str] = []
    literal: list[str] = []

    def text_object(value: Any) -> None:
        if isinstance(value, dict) and "text" in value:
            (parsed if value.get("type") == "mrkdwn" else literal).append(str(value["text"]))

    for block in blocks:
        text_object(block.get("text"))
        for element in block.get("elements", []):
            if block["type"] == "rich_text":
                for inner in element["elements"]:
                    if inner["type"] in ("text", "link"):
                        assert set(inner.get("style", {})) <= {"bold", "code"}
                        literal.append(inner.get("text", ""))
            else:
                text_object(element)
    return parsed, literal


def assert_feed_text_is_literal(blocks: list[dict[str, Any]]) -> None:
    assert block_problem(blocks, max_blocks=100) is None
    parsed, literal = mrkdwn_and_literal(blocks)
    assert any(SHOWN_TITLE in text for text in literal), literal
    for text in parsed:
        assert not [word for word in FEED_WORDS if word in text], text


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start_bot(tmp_path, feed_host, slack, clock)


def test_a_feeds_markup_reaches_alerts_replies_and_app_home_only_as_literal_text(bot: Bot) -> None:
    bot.publish(HOSTILE_NEWS)
    bot.poll()
    [alert] = bot.slack.posts_to(CHIPS)
    assert_feed_text_is_literal(alert["blocks"])
    assert "<!channel>" not in alert["text"]  # the notification text neither pings nor links

    for command in ("search nexperia", "latest"):
        assert_feed_text_is_literal(bot.answer(command, channel=CHIPS)["blocks"])

    bot.slack.state.members[ALICE] = {CHIPS}
    bot.event({"type": "app_home_opened", "user": ALICE, "channel": "D0SOMEDM1", "tab": "home"})
    wait_for(lambda: bot.slack.state.views)
    assert_feed_text_is_literal(bot.slack.state.views[0]["view"]["blocks"])
