"""Alerts being delivered outside the delivery lock: claimed under it, released once their outcome is
recorded. While claimed, no other poll or retry may take the same article for the same channel. Holds
nothing on disk: a crash leaves no claim, and the outbox (bot.store) says what was posted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from bot.model import ChannelMatch
from bot.store import delivery_key


class InFlight:
    """(channel, article) pairs being delivered; an article is its delivery key or its link, as for
    `Store.is_delivered`. Thread-safe; claims are made while holding the delivery lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[tuple[str, str]] = set()

    @staticmethod
    def _names(match: ChannelMatch) -> list[tuple[str, str]]:
        names = [(match.channel, "key:" + delivery_key(match.item))]
        if match.item.link:
            names.append((match.channel, "link:" + match.item.link))
        return names

    def claim(self, match: ChannelMatch) -> bool:
        """Takes the article for the channel; False when another delivery has it."""
        names = self._names(match)
        with self._lock:
            if any(name in self._taken for name in names):
                return False
            self._taken.update(names)
            return True

    def release(self, matches: Iterable[ChannelMatch]) -> None:
        """Gives back what `claim` took (and only that: pass only the matches it answered True for)."""
        with self._lock:
            for match in matches:
                self._taken.difference_update(self._names(match))

    def __len__(self) -> int:
        with self._lock:
            return len(self._taken)
