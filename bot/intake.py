"""A poll's unseen items -> their matches, and how many of them one poll may send to a channel. Pure: runs
before the delivery lock is taken (matching is the slow part of a poll); it neither posts nor remembers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from bot.errors import STOP_REQUESTS, one_line_error
from bot.model import ChannelMatch, Item
from bot.oncall import policy_of

# What one poll of one feed may hand a channel beyond `settings.max_alerts_per_cycle` single alerts: this
# many more, which go out grouped. Everything past that is told as "N more" and never posted: the items
# are marked seen like the rest of the feed, so a feed that publishes 2,000 items at once costs its
# channels a few messages, not 2,000, and cannot keep the bot posting for minutes.
GROUPED_PER_POLL = 50


class ItemMatcher(Protocol):
    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]: ...


@dataclass(frozen=True)
class FailedItem:
    """An item that made matching raise: skipped (and marked seen with the rest), so it cannot fail every
    later poll of its feed, a restart included."""

    item: Item
    error: str  # one line: the exception's type and message

    def log_line(self) -> str:
        return f"item skipped feed={self.item.feed_id} key={self.item.key!r} error={self.error!r}"


@dataclass(frozen=True)
class ItemMatches:
    """What the rules matched in a poll's items, item by item, computed once outside the delivery lock.
    Looks like a matcher to `plan_alerts`, which then decides under the lock without matching again."""

    matches: dict[str, tuple[ChannelMatch, ...]]  # by item key
    failed: tuple[FailedItem, ...] = ()

    def match_item(self, item: Item, *, ignore_feed_filter: bool = False) -> tuple[ChannelMatch, ...]:
        return self.matches.get(item.key, ())


def match_items(items: Sequence[Item], matcher: ItemMatcher) -> ItemMatches:
    """Matches every item; one whose matching raises (a bug, a panic in the Rust term scanner, memory
    running out for one pathological item) is set aside as failed, and the others are matched."""
    matches: dict[str, tuple[ChannelMatch, ...]] = {}
    failed: list[FailedItem] = []
    for item in items:
        try:
            matches[item.key] = matcher.match_item(item)
        except STOP_REQUESTS:
            raise
        except BaseException as e:  # everything but STOP_REQUESTS
            failed.append(FailedItem(item, one_line_error(e)))
    return ItemMatches(matches, tuple(failed))


@dataclass(frozen=True)
class Capped:
    """One poll's alerts once capped: the ones it goes on with (oldest first, as given) and, per channel,
    how many it leaves out."""

    kept: tuple[ChannelMatch, ...]
    left_out: dict[str, int]


def cap_per_channel(alerts: Sequence[ChannelMatch], *, max_per_cycle: int) -> Capped:
    """Pure. Each channel keeps at most `max_per_cycle + GROUPED_PER_POLL` of one poll's alerts: high
    priority ones first, then the newest (as a first poll's backfill does). The order of what is kept
    does not change."""
    limit = max_per_cycle + GROUPED_PER_POLL
    by_channel: dict[str, list[int]] = {}
    for index, match in enumerate(alerts):
        by_channel.setdefault(match.channel, []).append(index)
    oldest = datetime.min.replace(tzinfo=UTC)
    dropped: set[int] = set()
    left_out: dict[str, int] = {}
    for channel, indexes in by_channel.items():
        if len(indexes) <= limit:
            continue
        # Alerts come oldest first: a later index is newer when publication times tie or are missing.
        ranked = sorted(
            indexes,
            key=lambda i: (
                policy_of(alerts[i]).high,
                alerts[i].item.published or oldest,
                i,
            ),
            reverse=True,
        )
        dropped.update(ranked[limit:])
        left_out[channel] = len(indexes) - limit
    kept = tuple(match for index, match in enumerate(alerts) if index not in dropped)
    return Capped(kept, left_out)
