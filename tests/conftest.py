from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.feed_host import FeedHost, running_feed_host
from tests.slack_standin import SlackStandIn, running_slack

REPO = Path(__file__).resolve().parent.parent
SAMPLE_FEED = REPO / "bot" / "sample" / "scmp-semiconductors.xml"
SHARED_FEEDS = REPO.parent / "shared" / "feeds"

_ITEM = re.compile(rb"\s*<item>.*?</item>", re.S)


def scmp_bytes() -> bytes:
    return SAMPLE_FEED.read_bytes()


def scmp_items() -> list[bytes]:
    return _ITEM.findall(scmp_bytes())


def scmp_feed(*, drop_newest: int = 0, extra_items: tuple[bytes, ...] = ()) -> bytes:
    """The real SCMP feed as it looked before its `drop_newest` newest items were published, optionally with
    synthetic items on top (newest first, as the feed lists them)."""
    body = scmp_bytes()
    items = _ITEM.findall(body)
    head = body[: body.index(items[0])]
    tail = body[body.index(items[-1]) + len(items[-1]) :]
    return head + b"".join(extra_items) + b"".join(items[drop_newest:]) + tail


def rss_item(
    title: str,
    guid: str,
    *,
    link: str | None = None,
    description: str = "",
    published: str = "Mon, 01 Jun 2026 08:00:00 +0000",
) -> bytes:
    """An RSS item; its guid is its link unless `link` says otherwise (then the guid is no permalink)."""
    permalink = "false" if link else "true"
    return (
        f"\n    <item>\n      <title>{title}</title>\n      <link>{link or guid}</link>\n"
        f'      <guid isPermaLink="{permalink}">{guid}</guid>\n'
        f"      <description>{description}</description>\n"
        f"      <pubDate>{published}</pubDate>\n    </item>"
    ).encode()


class Clock:
    """A controllable clock: tests move time instead of sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feed_host() -> Iterator[FeedHost]:
    with running_feed_host() as host:
        yield host


@pytest.fixture
def slack(clock: Clock) -> Iterator[SlackStandIn]:
    with running_slack(lambda: clock.now.timestamp()) as standin:
        yield standin


@pytest.fixture
def shared_feeds() -> Path:
    if not SHARED_FEEDS.is_dir():
        pytest.skip(
            f"{SHARED_FEEDS} not found: the real-feed tests read ../shared/feeds beside the repository"
        )
    return SHARED_FEEDS
