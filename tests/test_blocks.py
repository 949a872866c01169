"""Rendering: the Block Kit payload is pinned by a golden file; feed text can never ping or forge links."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import richtext as rich
from bot.blocks import (
    escape_mrkdwn,
    mrkdwn_link,
    render_alert,
    render_console,
    render_group,
    trim,
    without_image,
)
from bot.health import FAILING, FeedHealth
from bot.home import FeedStatus, RecentAlert, home_view
from bot.model import ChannelMatch, ChannelRule, Escalation, Item
from bot.notices import render_escalation, render_feed_notice
from bot.oncall import AlertPolicy, OpenAlert
from bot.parse import parse_feed
from bot.store import ChannelProblem
from tests.conftest import scmp_bytes
from tests.slack_standin import block_problem

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
    assert "accessory" not in json.dumps(message.payload())  # a javascript: thumbnail is dropped
    assert [e["type"] for e in feed_text_elements(message)] == ["link", "text", "text", "text"]
    [link] = [e for e in feed_text_elements(message) if e["type"] == "link"]
    assert link["text"] == "<!channel> <@U123> <https://evil.example|click> & more"  # literal, not markup
    for text in [*mrkdwn_texts(message), message.text]:
        for forbidden in ("<!channel>", "<!here>", "<@U123>", "<!subteam", "<!everyone>", "<https://evil"):
            assert forbidden not in text


def feed_text_elements(message) -> list[dict]:
    """Every rich_text element of the message: the only place feed text may appear."""
    return [
        element
        for block in message.blocks
        if block["type"] == "rich_text"
        for section in block["elements"]
        for element in section["elements"]
    ]


def mrkdwn_texts(message) -> list[str]:
    """Every piece of text Slack would read as mrkdwn (markup and formatting characters count there)."""
    out = []
    for block in message.blocks:
        texts = [block.get("text")] + [e for e in block.get("elements", []) if block["type"] != "rich_text"]
        out += [t["text"] for t in texts if isinstance(t, dict) and t.get("type") == "mrkdwn"]
    return out


SLACK_SPECIAL = st.lists(
    st.sampled_from(
        ["<", ">", "|", "&", "!", "@", "#", "^", "*", "_", "~", "`", " ", "\n", "\x00", "\u202e", "a", "Z"]
    )
    | st.sampled_from(["<!channel>", "<!here>", "<@U0123ABCD>", "<!subteam^S123|@team>", "<#C0123|x>"])
    | st.sampled_from(["<https://evil.example|click>", "&lt;", "&amp;", "<mailto:a@b.c>", "<!date^1^x|y>"])
    | st.sampled_from(["*bold*", "_it_", "~no~", "`code`", "```pre```", ":smile:", "> quote"]),
    max_size=12,
).map("".join)
MARKER = "Zq"  # a word no bot-made text holds: where it shows, feed text is there


@settings(max_examples=300, deadline=None)
@given(title=SLACK_SPECIAL, summary=SLACK_SPECIAL, author=SLACK_SPECIAL, source=SLACK_SPECIAL)
def test_no_feed_text_can_ping_link_or_format_as_slack_markup(title, summary, author, source) -> None:
    title, summary, author, source = (MARKER + t for t in (title, summary, author, source))
    item = Item(
        feed_id="f",
        key="k",
        link="https://example.com/item",
        title=title,
        summary=summary,
        author=author,
        thumbnail="https://example.com/i.png",
    )
    message = render_alert(ChannelMatch("C1", item, ("a",)), source=source)
    # Feed text reaches the blocks only as literal rich_text text and link elements (bold and the link
    # are explicit: no character of the feed's can format) or as plain_text, which Slack never parses.
    for element in feed_text_elements(message):
        assert element["type"] in ("text", "link"), element
        assert set(element.get("style", {})) <= {"bold"}
        if element["type"] == "link":
            assert element["url"] == "https://example.com/item"
    for text in mrkdwn_texts(message):
        assert MARKER not in text, text
        for markup in re.findall(r"<[^>]*>?", text):
            assert markup.startswith("<!date^"), (markup, text)
    shown = [e["text"] for e in feed_text_elements(message)] + [
        e["text"]
        for block in message.blocks
        for e in block.get("elements", [])
        if e.get("type") == "plain_text"
    ]
    assert any(MARKER in text for text in shown)
    # The notification text: the title and link, never a ping or a link of the feed's.
    for markup in re.findall(r"<[^>]*>?", message.text):
        raise AssertionError((markup, message.text))
    for text in [*shown, message.text]:
        assert "\x00" not in text and "\u202e" not in text
    assert not re.search(r"&(?!amp;|lt;|gt;)", message.text)  # a bare & would start an entity of the feed's


def test_a_javascript_link_is_shown_as_text_not_linked() -> None:
    assert mrkdwn_link("javascript:alert(1)", "Title") == "Title"
    assert rich.link("javascript:alert(1)", "Title") == {"type": "text", "text": "Title"}


def test_matched_words_are_bold_in_the_summary_but_not_inside_words() -> None:
    item = Item(
        feed_id="f", key="k", link="https://e.com", title="t", summary="Nexperia’s chips; 华为芯片 news"
    )
    elements = feed_text_elements(render_alert(ChannelMatch("C1", item, ("Nexperia", "华为")), source="s"))
    bold = [e["text"] for e in elements if e["type"] == "text" and e.get("style") == {"bold": True}]
    assert bold == ["Nexperia"]
    assert "华为芯片" in "".join(e["text"] for e in elements)


def test_feed_formatting_characters_stay_literal_in_the_alert() -> None:
    item = Item(
        feed_id="f",
        key="k",
        link="https://e.com/a",
        title="*Breaking* _news_ ~old~ `rm -rf`",
        summary="Huawei *wins* a `code` ~strike~",
        author="_someone_",
    )
    message = render_alert(ChannelMatch("C1", item, ("Huawei",)), source="*Feed*")
    elements = feed_text_elements(message)
    assert elements[0] == {
        "type": "link",
        "url": "https://e.com/a",
        "text": "*Breaking* _news_ ~old~ `rm -rf`",
        "style": {"bold": True},
    }
    assert elements[1:] == [
        {"type": "text", "text": "\n"},
        {"type": "text", "text": "Huawei", "style": {"bold": True}},
        {"type": "text", "text": " *wins* a `code` ~strike~"},
    ]
    [context] = [b for b in message.blocks if b["type"] == "context"]
    assert context["elements"][0] == {"type": "plain_text", "text": "*Feed* · _someone_", "emoji": False}


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
    assert block_problem(list(message.blocks)) is None
    assert "accessory" not in json.dumps(message.blocks)  # an image URL over 3000 characters is refused
    assert feed_text_elements(message)[0]["type"] == "text"  # a link over 3000: shown as text
    assert len(message.text) <= 1000


def test_control_characters_are_removed() -> None:
    item = Item(feed_id="f", key="k", link="", title="Bad\x00title\u202e here", summary="a\x07b")
    shown = json.dumps(
        render_alert(ChannelMatch("C1", item, ("x",)), source="s").payload(), ensure_ascii=False
    )
    assert "\x00" not in shown and "\u202e" not in shown and "Badtitle here" in shown


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
    assert "accessory" in json.dumps(message.blocks)
    assert (
        "accessory" not in json.dumps(plain.blocks)
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


def test_escalations_and_feed_notices_show_feed_text_literally() -> None:
    item = Item(feed_id="f", key="k", link="https://e.com/a", title="*Urgent* _now_ <!here>")
    alert = OpenAlert(
        id="a1",
        channel="C1",
        ts="1.0",
        item=item,
        keywords=("x",),
        source="s",
        policy=AlertPolicy(priority="high", escalate=Escalation(1800, "@leads", 2)),
        posted_at=datetime(2026, 6, 1, 9, 0, tzinfo=UTC),
    )
    text, blocks = render_escalation(alert, 1, "30m", "<!subteam^S0LEADS>")
    [section] = blocks[0]["elements"]
    assert section["elements"][0] == {"type": "usergroup", "usergroup_id": "S0LEADS"}  # it still pages
    assert {"type": "link", "url": "https://e.com/a", "text": "*Urgent* _now_ <!here>"} in section["elements"]
    assert block_problem(list(blocks)) is None
    assert "<!here>" not in text and text.startswith("<!subteam^S0LEADS> ⏰ Not acknowledged after 30m")

    failing = FeedHealth(
        10, item.published, None, "HTTP 503 *down* _for_ `maintenance` <!here>", notice=FAILING
    )
    notice = render_feed_notice("scmp", failing)
    assert "`HTTP 503 *down* _for_ 'maintenance' &lt;!here&gt;`" in notice  # inline code: nothing formats


def test_a_grouped_message_lists_feed_titles_literally_and_within_limits() -> None:
    entries = [
        (
            ChannelMatch(
                "C1", Item(feed_id="f", key=f"k{n}", link=f"https://e.com/{n}", title=f"*{n}* _x_"), ("a",)
            ),
            "*source*",
        )
        for n in range(120)
    ]
    messages = render_group("C1", entries, "Digest")
    assert len(messages) > 1
    for message in messages:
        assert block_problem(list(message.blocks)) is None
        assert not [t for t in mrkdwn_texts(message) if "_x_" in t or "*source*" in t]
    titles = [e["text"] for m in messages for e in feed_text_elements(m) if e["type"] == "link"]
    assert titles == [f"*{n}* _x_" for n in range(120)]  # every item, in order, as written


def test_app_home_with_a_hundred_feeds_still_shows_the_users_channels_and_latest_alerts() -> None:
    at = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    feeds = [
        FeedStatus(f"feed{n}", f"https://news.example/{n}", at, "ok", None, 3 if n == 110 else 0, 10)
        for n in range(120)
    ]
    channels = {f"C0CHAN{n:03d}": [ChannelRule(f"C0CHAN{n:03d}", ("Nexperia",))] for n in range(40)}
    broken = [ChannelProblem(f"C0GONE{n:03d}", "is_archived", at, at) for n in range(15)]
    recent = [
        RecentAlert("C0CHAN000", Item("feed1", f"k{n}", f"https://x.example/{n}", f"Story {n}"), at)
        for n in range(12)
    ]
    view = home_view(
        command="/feeds", feeds=feeds, channel_rules=channels, recent=recent, paused={}, broken=broken
    )
    blocks = view["blocks"]
    assert block_problem(blocks, max_blocks=100) is None
    text = json.dumps(blocks, ensure_ascii=False)
    assert "…and 80 more feeds, 1 of them failing." in text
    assert "…and 5 more channels." in text and "…and 10 more of your channels." in text
    assert "Story 0" in text  # the latest alerts are still there
