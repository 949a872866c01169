"""What one feed's author can make the bot keep: the caps on an item's fields, on items per document, on
seen keys and on the archive, and the pure functions that apply them. The README's Limits table cites
these names. No I/O and no state here: parse.py and store.py call in.

The numbers come from the real feeds in ../shared/feeds (30 feeds, 940 items): the longest title is
148 characters, author 64, link or guid 202, thumbnail URL 269; the longest summary 9,575 (Dawn sends
whole articles, from 12,816 characters of HTML); the most entries in one document 141; an archived item
averages 0.5 to 3.5 KB (Dawn) and is at most 10 KB."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

MAX_TITLE_CHARS = 1_000  # 6x the longest real title; also the feed's own title (the alert's source)
MAX_SUMMARY_CHARS = 10_000  # keeps Dawn's whole articles (9,575); Block Kit shows far less anyway
MAX_AUTHOR_CHARS = 200  # 3x the longest real byline
# Markup and entities shrink when turned into text (Dawn: 12,816 -> 9,575): reading ten times a field's
# cap of its source is always enough, and HTML-to-text never parses more than that.
SOURCE_CHARS_PER_FIELD_CHAR = 10
# Links and thumbnails are dropped, not cut, past this: a cut URL leads somewhere else. 2,048 is what
# browsers and CDNs reliably carry; Slack takes up to 3,000 in a button or image.
MAX_URL_CHARS = 2_048
# A guid longer than this is kept as its SHA-1 ("sha1:…"): still stable and distinct, and short.
MAX_KEY_CHARS = 2_048
MAX_ITEMS_PER_DOCUMENT = 500  # 3.5x the largest real feed; the newest are read (see newest_first)
# Seen keys per feed: those in the latest document, plus this many of the rest, the most recently present.
SEEN_KEYS_BEYOND_FEED = 2_000
ARCHIVE_ITEMS_PER_FEED = 2_000
ARCHIVE_BYTES_PER_FEED = 4_000_000  # about 1,100 of Dawn's long items, 5,000 of a typical feed's
ARCHIVE_BYTES_TOTAL = 64_000_000  # all feeds together; past it the feed holding the most gives way

ELLIPSIS = "…"


def cut_text(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its start and an ellipsis, `limit` characters in all.
    Cut between code points (a str never splits a UTF-8 sequence), and never after a lone combining
    mark's base: the marks that followed it go too."""
    if len(text) <= limit:
        return text
    cut = limit - len(ELLIPSIS)
    while cut > 0 and _is_combining(text[cut]):
        cut -= 1
    return text[:cut].rstrip() + ELLIPSIS


def _is_combining(char: str) -> bool:
    # Combining marks and zero-width joiners attach to the character before them: cutting just before
    # one would leave its base without it. (U+0300-036F, U+1AB0-1AFF, U+1DC0-1DFF, U+20D0-20FF,
    # U+FE20-FE2F, variation selectors, ZWJ.)
    code = ord(char)
    return (
        0x0300 <= code <= 0x036F
        or 0x1AB0 <= code <= 0x1AFF
        or 0x1DC0 <= code <= 0x1DFF
        or 0x20D0 <= code <= 0x20FF
        or 0xFE00 <= code <= 0xFE0F
        or 0xFE20 <= code <= 0xFE2F
        or code == 0x200D
    )


def keys_to_forget(last_present: Mapping[str, str], in_feed: Collection[str], keep: int) -> list[str]:
    """The seen keys of one feed to forget so that no more than `keep` remain besides those `in_feed`:
    the ones absent from the feed longest (`last_present` maps a key to an ISO time). A key in the feed is
    never forgotten, so an item the feed still lists is never new again."""
    gone = [key for key in last_present if key not in in_feed]
    if len(gone) <= keep:
        return []
    gone.sort(key=last_present.__getitem__)
    return gone[: len(gone) - keep]


def archived_bytes(doc: Mapping[str, Any]) -> int:
    """An archive document's size as the archive file holds it (UTF-8 JSON)."""
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def archive_overflow(
    entries: Iterable[tuple[str, str, str, int]],
    *,
    max_items: int,
    max_bytes: int,
) -> list[str]:
    """The keys to drop, oldest first, so that what remains of `entries` ((key, archived_at, published,
    bytes) of one feed, or of all) holds at most `max_items` items and `max_bytes` bytes."""
    ordered = sorted(entries, key=lambda entry: (entry[1], entry[2]))
    count = len(ordered)
    total = sum(entry[3] for entry in ordered)
    dropped: list[str] = []
    for key, _, _, size in ordered:
        if count <= max_items and total <= max_bytes:
            break
        dropped.append(key)
        count -= 1
        total -= size
    return dropped


def heaviest_first(bytes_by_group: Mapping[str, int], total: int, limit: int) -> dict[str, int]:
    """How many bytes each group (feed) must give up so that the total is at most `limit`: taken from the
    group holding the most, down to the next one's level, and so on, so one feed's flood costs that feed
    and never a small one."""
    excess = total - limit
    if excess <= 0:
        return {}
    groups = sorted(bytes_by_group.items(), key=lambda group: group[1], reverse=True)
    levels = [size for _, size in groups] + [0]
    # Find the level L such that sum(max(0, size - L)) >= excess, lowering it group by group.
    removed = 0
    for index in range(len(groups)):
        width = index + 1
        step = (levels[index] - levels[index + 1]) * width
        if removed + step >= excess:
            level = levels[index] - -(-(excess - removed) // width)
            return {name: size - level for name, size in groups[:width] if size > level}
        removed += step
    return {name: size for name, size in groups}
