"""Rendering: the Block Kit payload is pinned by a golden file; feed text can never ping or forge links."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.blocks import (
    SECTION_TEXT_LIMIT,
    escape_mrkdwn,
    mrkdwn_link,
    render_alert,
    render_console,
    trim,
    without_image,
)
from bot.model import ChannelMatch, Item
from bot.parse import parse_feed
from tests.conftest import scmp_bytes

GOLDEN = Path(__file__).parent / "golden"


def scmp_match(index: int, keywords: tuple[str, ...]) -> ChannelMatch:
    item = parse_feed(scmp_bytes(), "scmp-semiconductors").items[index]
    return ChannelMatch("C0123ABCD", item, keywords)


def test_alert_payload_matches_the_golden_file() -> None:
    message = render_alert(scmp_match(2, ("Nexperia", "Wingtech")), source="South China Morning Post")
    payload = message.payload()
    golden = GOLDEN / "alert_nexperia.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    assert payload == json.loads(golden.read_text())


def test_hostile_feed_text_cannot_ping_or_forge_links() -> None:
    item = Item(
        feed_id="f",
        key="k",
        link="https://example.com/a|b>c",
        title="<!channel> <@U123> <https://evil.example|click> & more",
        summary="<!here> ping <!subteam^S123> and <https://evil.example|a link>",
        author="<!everyone>",
        thumbnail="javascript:alert(1)",
    )
    message = render_alert(ChannelMatch("C1", item, ("ping",)), source="<!channel>")
    rendered = json.dumps(message.payload())
    for forbidden in ("<!channel>", "<!here>", "<@U123>", "<!subteam", "<!everyone>", "<https://evil"):
        assert forbidden not in rendered
    section = message.blocks[0]
    assert "accessory" not in section  # a javascript: thumbnail is dropped
    assert section["text"]["text"].startswith("*<https://example.com/a%7Cb%3Ec|&lt;!channel&gt;")


SLACK_SPECIAL = st.lists(
    st.sampled_from(
        ["<", ">", "|", "&", "!", "@", "#", "^", "*", "_", "~", "`", " ", "\n", "\x00", "\u202e", "a"]
    )
    | st.sampled_from(["<!channel>", "<!here>", "<@U0123ABCD>", "<!subteam^S123|@team>", "<#C0123|x>"])
    | st.sampled_from(["<https://evil.example|click>", "&lt;", "&amp;", "<mailto:a@b.c>", "<!date^1^x|y>"]),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(title=SLACK_SPECIAL, summary=SLACK_SPECIAL, author=SLACK_SPECIAL, source=SLACK_SPECIAL)
def test_no_feed_text_can_ping_link_or_format_as_slack_markup(title, summary, author, source) -> None:
    item = Item(
        feed_id="f", key="k", link="https://example.com/item", title=title, summary=summary, author=author
    )
    message = render_alert(ChannelMatch("C1", item, ("a",)), source=source)
    texts = [message.text] + [
        text
        for block in message.blocks
        for text in [block.get("text", {}).get("text", "")]
        + [element.get("text", "") for element in block.get("elements", [])]
    ]
    for text in texts:
        # The only markup in a message is the bot's own: the item's link and Slack's date formatting.
        for markup in re.findall(r"<[^>]*>?", text):
            assert markup.startswith(("<https://example.com/item", "<!date^")), (markup, text)
        assert "\x00" not in text and "\u202e" not in text
        assert not re.search(r"&(?!amp;|lt;|gt;)", text)  # a bare & would start an entity of the feed's


def test_a_javascript_link_is_shown_as_text_not_linked() -> None:
    assert mrkdwn_link("javascript:alert(1)", "Title") == "Title"


def test_matched_words_are_bold_in_the_summary_but_not_inside_words() -> None:
    item = Item(
        feed_id="f", key="k", link="https://e.com", title="t", summary="Nexperia’s chips; 华为芯片 news"
    )
    text = render_alert(ChannelMatch("C1", item, ("Nexperia", "华为")), source="s").blocks[0]["text"]["text"]
    assert "*Nexperia*’s" in text
    assert "华为芯片" in text and "*华为*" not in text


def test_very_long_fields_stay_within_block_kit_limits() -> None:
    item = Item(
        feed_id="f",
        key="k",
        link="https://e.com/" + "a" * 5000,
        title="T" * 5000,
        summary=("word & <b> " * 2000),
        author="A" * 5000,
        thumbnail="https://e.com/" + "i" * 4000,
    )
    message = render_alert(ChannelMatch("C1", item, tuple(f"kw{n}" for n in range(300))), source="s" * 500)
    section, context = message.blocks
    assert len(section["text"]["text"]) <= SECTION_TEXT_LIMIT
    assert len(context["elements"][0]["text"]) <= 3000
    assert "accessory" not in section  # an image URL over 3000 characters is refused by Slack
    assert len(message.text) <= 1000


def test_control_characters_are_removed() -> None:
    item = Item(feed_id="f", key="k", link="", title="Bad\x00title\u202e here", summary="a\x07b")
    section = render_alert(ChannelMatch("C1", item, ("x",)), source="s").blocks[0]
    assert "\x00" not in section["text"]["text"] and "\u202e" not in section["text"]["text"]


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("short", 10, "short"), ("one two three four", 12, "one two…"), ("x" * 20, 10, "x" * 9 + "…")],
)
def test_trim_cuts_at_a_word_boundary(text: str, limit: int, expected: str) -> None:
    assert trim(text, limit) == expected


def test_escape_mrkdwn_escapes_exactly_the_three_control_characters() -> None:
    assert escape_mrkdwn("a & b < c > d *e*") == "a &amp; b &lt; c &gt; d *e*"


def test_without_image_keeps_everything_else() -> None:
    message = render_alert(scmp_match(2, ("Nexperia",)), source="s")
    plain = without_image(message)
    assert (
        "accessory" not in plain.blocks[0]
        and plain.text == message.text
        and plain.metadata == message.metadata
    )


def test_console_rendering_shows_channel_keywords_title_link_and_source() -> None:
    text = render_console(scmp_match(2, ("Nexperia",)), source="SCMP", channel_label="#chips")
    lines = text.splitlines()
    assert lines[0] == "▶ #chips  ·  matched: Nexperia"
    assert (
        lines[1]
        == "  Wingtech says core of Nexperia China unit now based on mainland, can operate independently"
    )
    assert lines[2].startswith("  https://www.scmp.com/tech/tech-war/article/3355315/")
    assert "SCMP · Ann Cao · 2026-05-29 10:01 UTC" in lines[-1]
