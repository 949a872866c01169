"""What a feed's author can make the bot keep (bot.feed_limits): field sizes, entries per document, seen
keys and the archive. Attacks come from a loopback feed host, polled by the real app, read back through
the signed Slack endpoint; sizes are scaled down to what still proves the point, and measured in bytes
and counts, never in time."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from bot import feed_limits
from bot.feed_limits import cut_text, heaviest_first
from bot.model import Item
from bot.parse import parse_feed
from bot.storage import TinyDBBackend
from bot.store import CycleChange, MemoryBackend, Store
from tests.conftest import Clock, rss_item
from tests.feed_host import FeedHost
from tests.slack_standin import SlackStandIn
from tests.test_slack_app import CHIPS, Bot, start_bot

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def bot(tmp_path: Path, feed_host: FeedHost, slack: SlackStandIn, clock: Clock) -> Iterator[Bot]:
    yield from start_bot(tmp_path, feed_host, slack, clock)


def rss(*items: bytes) -> bytes:
    return (
        b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Flood</title>'
        b"<link>https://flood.example/</link>" + b"".join(items) + b"\n</channel></rss>"
    )


def dated(minutes_after_t0: int) -> str:
    return format_datetime(T0 + timedelta(minutes=minutes_after_t0))


def state_bytes(folder: Path, stem: str) -> int:
    """The main file and its journal, as they are on disk."""
    return sum(path.stat().st_size for path in folder.glob(stem + "*") if path.is_file())


def archive_of(bot: Bot, feed_id: str = "scmp") -> list[Item]:
    return [entry.item for entry in bot.app.store.archived() if entry.item.feed_id == feed_id]


# -- item fields ----------------------------------------------------------------------------------------


def test_a_huge_non_ascii_item_is_archived_small_and_search_stays_cheap(bot: Bot, tmp_path: Path) -> None:
    # The attack: a 9 MB non-ASCII item made every /feeds search cost 3.3 s and 800 MB. Scaled: 3 MB.
    huge = "Nexperia 芯片出口管制 " + "芯片供应链" * 600_000
    archive_before = state_bytes(tmp_path, "state.archive")
    title = "Nexperia 芯片 " + "长" * 50_000
    bot.publish(rss_item(title, "https://www.scmp.com/tech/huge", description=huge))
    bot.poll()

    [item] = [i for i in archive_of(bot) if i.key == "https://www.scmp.com/tech/huge"]
    assert len(item.title) == feed_limits.MAX_TITLE_CHARS and item.title.endswith("…")
    assert len(item.summary) == feed_limits.MAX_SUMMARY_CHARS and item.summary.endswith("…")
    assert item.summary.startswith("Nexperia 芯片出口管制 芯片供应链")
    grown = state_bytes(tmp_path, "state.archive") - archive_before
    assert grown < 40_000  # 11,000 characters of 3 UTF-8 bytes, not 9 MB

    tracemalloc.start()
    try:
        reply = bot.say("search 芯片出口管制")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "Nexperia 芯片" in reply
    assert peak < 4_000_000, f"search allocated up to {peak:,} bytes"


def test_fields_past_their_bounds_are_cut_with_an_ellipsis_or_dropped_never_kept_whole() -> None:
    long_url = "https://evil.example/" + "a" * 5_000
    body = rss(
        b"<item><title>"
        + ("e\u0301" * 800).encode()  # 1,600 code points: the cut must not part an e from its accent
        + b"</title><link>"
        + long_url.encode()
        + b"</link><guid>"
        + long_url.encode()
        + b"/1</guid><author>"
        + b"Reporter " * 1_000
        + b'</author><description>Nexperia</description><enclosure url="'
        + long_url.encode()
        + b'.jpg" type="image/jpeg"/></item>'
        + b"<item><title>Second</title><guid>"
        + long_url.encode()
        + b"/2</guid></item>"
    )
    first, second = parse_feed(body, "f").items

    assert len(first.title) <= feed_limits.MAX_TITLE_CHARS and first.title.endswith("e\u0301…")
    assert len(first.author) <= feed_limits.MAX_AUTHOR_CHARS and first.author.endswith("…")
    assert first.link == "" and first.thumbnail is None  # a cut URL would lead somewhere else
    assert first.key.startswith("sha1:") and second.key.startswith("sha1:") and first.key != second.key
    assert parse_feed(body, "f").items[0].key == first.key  # stable across polls


def test_markup_past_what_a_summary_can_show_is_never_parsed_as_html() -> None:
    # Only the start of a source is turned into text (10 characters of markup per character kept): 2.5 MB
    # of markup in a summary cost 3.6 s and 78 MB of peak RSS beyond feedparser's own work when parsed whole.
    # Here, markup with little text in it: the words past that start never reach the summary, and the
    # summary says with its ellipsis that it is not all there was.
    empty_markup = "&lt;b&gt;&lt;/b&gt;" * (feed_limits.MAX_SUMMARY_CHARS * 10 // 7)
    description = f"Nexperia head {empty_markup} words past the bound"
    item_xml = f"<item><title>T</title><guid>g</guid><description>{description}</description></item>"
    body = rss(item_xml.encode())

    [item] = parse_feed(body, "f").items

    assert item.summary == "Nexperia head…"


def test_a_cut_is_on_a_character_and_keeps_short_text_as_it_is() -> None:
    assert cut_text("short", 10) == "short"
    assert cut_text("🙂" * 20, 10) == "🙂" * 9 + "…"
    assert cut_text("word " * 10, 12) == "word word w…"
    assert cut_text("ae\u0301\u0301b", 4) == "a…"


# -- entries per document -------------------------------------------------------------------------------


def numbered(count: int, *, start: int = 0, prefix: str = "item", matching: set[int] = frozenset()) -> bytes:
    """`count` dated entries, newest first, as most feeds list them; those in `matching` mention Nexperia."""
    return b"".join(
        rss_item(
            f"{'Nexperia' if n in matching else 'Filler'} {prefix} {n}",
            f"https://flood.example/{prefix}/{n}",
            published=dated(n),
        )
        for n in reversed(range(start, start + count))
    )


def posted(bot: Bot) -> list[str]:
    """The titles posted to #chips, in order (an alert's fallback text is its title and link)."""
    return [post["text"].rsplit(" https://", 1)[0] for post in bot.slack.posts_to(CHIPS)]


def test_only_the_newest_500_entries_of_a_document_are_read_and_the_rest_wait(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    # 600 entries: the 500 newest become items; the 100 oldest are neither archived nor seen.
    caplog.set_level(logging.INFO, logger="bot")
    bot.feed_host.serve("/feed", rss(numbered(600, matching={50})))
    bot.poll()
    keys = {item.key for item in archive_of(bot)}
    assert len(keys) == 500 + 47  # and the 47 SCMP items of the first poll
    assert "https://flood.example/item/100" in keys and "https://flood.example/item/99" not in keys
    assert "read the newest 500 of its 600 entries" in caplog.text  # the feed's poll line says so
    assert posted(bot) == []

    # The 150 newest are withdrawn: the unread ones still listed come within 500 and count as new.
    bot.feed_host.serve("/feed", rss(numbered(450, matching={50})))
    bot.poll()
    assert posted(bot) == ["Nexperia item 50"]


def test_a_feed_listing_oldest_first_still_gives_its_newest_500() -> None:
    oldest_first = b"".join(
        rss_item(f"Story {n}", f"https://flood.example/{n}", published=dated(n)) for n in range(520)
    )
    items = parse_feed(rss(oldest_first), "f").items
    assert len(items) == 500
    assert items[0].key == "https://flood.example/20" and items[-1].key == "https://flood.example/519"


# -- growth: seen keys and the archive ------------------------------------------------------------------


def test_a_feed_changing_every_guid_each_poll_grows_neither_seen_keys_nor_archive_past_their_bounds(
    bot: Bot, tmp_path: Path
) -> None:
    # 500 new guids every poll (the attack used 20,000; only 500 a document are read), seven polls, with
    # one story that stays in the feed throughout and one that leaves and comes back much later.
    stays = rss_item("Nexperia stays listed", "https://flood.example/stays", published=dated(-10))
    returns = rss_item("Nexperia comes back", "https://flood.example/returns", published=dated(-20))
    bot.feed_host.serve("/feed", rss(stays, returns, numbered(498, prefix="p0")))
    bot.poll()
    assert sorted(posted(bot)) == [
        "Nexperia comes back",
        "Nexperia stays listed",
    ]
    seen, archived = [], []
    for poll in range(1, 8):
        bot.clock.advance(minutes=5)
        bot.feed_host.serve("/feed", rss(stays, numbered(499, prefix=f"p{poll}")))
        bot.poll()
        seen.append(bot.app.store.seen_count("scmp"))
        archived.append(len(archive_of(bot)))

    bound = 500 + feed_limits.SEEN_KEYS_BEYOND_FEED
    # 47 SCMP keys and 500, then 499 new ones a poll, until 500 in the feed and 2,000 gone from it.
    assert seen == [1_046, 1_545, 2_044, 2_500, 2_500, 2_500, 2_500]
    assert max(archived) == feed_limits.ARCHIVE_ITEMS_PER_FEED and archived[-1] == 2_000
    assert max(seen) == bound
    on_disk = TinyDBBackend(tmp_path / "state.json", owner=False)  # what a restart would read
    try:
        assert sum(doc["feed_id"] == "scmp" for doc in on_disk.load()["seen"].values()) == bound
        assert len(on_disk.load_archive()) == feed_limits.ARCHIVE_ITEMS_PER_FEED
    finally:
        on_disk.close()
    assert posted(bot).count("Nexperia stays listed") == 1

    # "returns" left 3,500 keys ago and was forgotten; it comes back, and its delivery record (90 days)
    # still keeps it from being posted again.
    assert bot.app.store.unseen("scmp", [parse_feed(rss(returns), "scmp").items[0]])
    bot.feed_host.serve("/feed", rss(stays, returns, numbered(498, prefix="p8")))
    bot.poll()
    assert posted(bot).count("Nexperia comes back") == 1


def test_a_feed_of_long_items_keeps_at_most_4_mb_in_the_archive_newest_kept(bot: Bot, tmp_path: Path) -> None:
    # 450 items of 10,000 characters: 4.6 MB of text in one poll.
    long_items = b"".join(
        rss_item(f"Long {n}", f"https://flood.example/long/{n}", published=dated(n), description="x" * 10_000)
        for n in reversed(range(450))
    )
    bot.feed_host.serve("/feed", rss(long_items))
    bot.poll()

    kept = [item for item in archive_of(bot) if item.key.startswith("https://flood.example/long/")]
    assert 350 < len(kept) < 450
    assert "https://flood.example/long/449" in {item.key for item in kept}  # the newest stay
    assert "https://flood.example/long/0" not in {item.key for item in kept}
    assert state_bytes(tmp_path, "state.archive") < feed_limits.ARCHIVE_BYTES_PER_FEED + 200_000


def test_past_the_total_archive_bound_the_feed_holding_the_most_gives_way(monkeypatch) -> None:
    monkeypatch.setattr(feed_limits, "ARCHIVE_BYTES_TOTAL", 100_000)
    store = Store.in_memory()

    def poll(feed_id: str, count: int, minutes: int) -> None:
        items = [
            Item(feed_id, f"{feed_id}-{n}", "", f"{feed_id} {n}", summary="y" * 1_000) for n in range(count)
        ]
        store.commit_cycle(CycleChange(feed_id, T0 + timedelta(minutes=minutes), items=items))

    poll("quiet", 10, 0)
    poll("flood", 300, 1)

    by_feed = [entry.item.feed_id for entry in store.archived()]
    assert by_feed.count("quiet") == 10
    assert 70 < by_feed.count("flood") < 100


def test_heaviest_first_takes_from_the_largest_down_to_a_common_level() -> None:
    assert heaviest_first({"a": 50, "b": 10}, 60, 100) == {}
    assert heaviest_first({"a": 50, "b": 10}, 60, 40) == {"a": 20}
    assert heaviest_first({"a": 50, "b": 40, "c": 5}, 95, 55) == {"a": 25, "b": 15}


def test_archive_bounds_hold_in_a_store_reopened_on_its_backend() -> None:
    backend = MemoryBackend()
    store = Store(backend)
    items = [Item("f", f"k{n}", "", f"t{n}") for n in range(2_100)]
    store.commit_cycle(CycleChange("f", T0, items=items))
    assert len(Store(backend).archived()) == feed_limits.ARCHIVE_ITEMS_PER_FEED


def test_an_archive_stored_before_its_bounds_is_brought_within_them_by_the_hourly_prune() -> None:
    backend = MemoryBackend()
    for n in range(2_300):  # as a bot without the bounds left it
        item = Item("f", f"k{n}", "", f"t{n}")
        backend.archive[f"f\x1fk{n}"] = {
            "key": f"f\x1fk{n}",
            "item": item.to_dict(),
            "archived_at": T0.isoformat(),
        }
    store = Store(backend)

    assert store.prune_archive(T0 + timedelta(hours=1), timedelta(days=30)) == 300
    assert len(Store(backend).archived()) == feed_limits.ARCHIVE_ITEMS_PER_FEED
