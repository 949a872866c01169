"""Every item of every real feed in ../shared/feeds goes through matching and rendering within Block Kit's
limits (skipped, saying why, where that folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.blocks import render_alert, render_console
from bot.errors import FeedError
from bot.model import ChannelMatch, ChannelRule
from bot.parse import parse_feed
from bot.rules import RuleMatcher
from tests.conftest import SHARED_FEEDS
from tests.slack_standin import block_problem

FEED_FILES = sorted(p.name for p in SHARED_FEEDS.glob("*.xml")) if SHARED_FEEDS.is_dir() else ["(none)"]


@pytest.mark.parametrize("name", FEED_FILES)
def test_every_item_renders_within_block_kit_limits(shared_feeds: Path, name: str) -> None:
    try:
        parsed = parse_feed((shared_feeds / name).read_bytes(), name)
    except FeedError:
        pytest.skip(f"{name} is not a readable feed (its own parse test says why)")
    for item in parsed.items:
        first_word = next((w.strip("'\"‘’“”:,.!?()") for w in item.title.split() if w[:1].isalnum()), "")
        if not first_word:
            continue
        matcher = RuleMatcher((ChannelRule("C1", (first_word,)),))
        matches = matcher.match_item(item)
        assert matches, f"{name}: {item.title!r} should match its own first word {first_word!r}"
        message = render_alert(matches[0], source=parsed.title or name)
        payload = json.loads(json.dumps(message.payload()))
        assert block_problem(payload["blocks"]) is None, payload
        for section in payload["blocks"]:
            if "accessory" in section:
                assert section["accessory"]["image_url"].startswith(("http://", "https://"))
                assert 0 < len(section["accessory"]["alt_text"]) <= 2000
        assert render_console(ChannelMatch("C1", item, (first_word,)), source=name)
