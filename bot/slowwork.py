"""Slow slash-command work (fetching a feed to add it, searching or matching the archive) on a
small pool of its own, bounded in total and per user, so that one user's ten add-feeds never hold the
threads other users' commands need. It must not know about Slack: a refusal is text the caller sends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bot.commands import ALIASES

log = logging.getLogger(__name__)

SLOW_WORKERS = 4
MAX_SLOW_COMMANDS = 16  # running or waiting, all users together
MAX_SLOW_COMMANDS_PER_USER = 2  # running or waiting, one user

_SLOW_VERBS = frozenset({"add-feed", "search", "latest"})
_SLOW_NAMED = "add-feed, search, latest"  # as the refusals name them


def is_slow_command(text: str) -> bool:
    """Commands whose work can take seconds whatever the input bounds: add-feed (a feed fetch), search and
    latest (every archived item, the latter through the channel's rules). Not subscribe: it is in force
    before its acknowledgement, and its preview reads only the newest archived items."""
    verb_text = text.strip().partition(" ")[0].lower()
    return ALIASES.get(verb_text, verb_text) in _SLOW_VERBS


class SlowWork:
    def __init__(
        self,
        *,
        workers: int = SLOW_WORKERS,
        most: int = MAX_SLOW_COMMANDS,
        per_user: int = MAX_SLOW_COMMANDS_PER_USER,
    ) -> None:
        self.most, self.per_user = most, per_user
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slow-command")
        self._lock = threading.Lock()
        self._total = 0
        self._by_user: dict[str, int] = {}

    def submit(self, user: str, work: Callable[[], None]) -> str | None:
        """Queues `work` for `user`; None when taken, else the one-line refusal naming the limit reached."""
        with self._lock:
            if self._by_user.get(user, 0) >= self.per_user:
                return (
                    f"You already have {self.per_user} slow commands ({_SLOW_NAMED}) "
                    "in progress, the most one person may; try again once they have answered."
                )
            if self._total >= self.most:
                return (
                    f"I am busy with {self.most} slow commands ({_SLOW_NAMED}), "
                    "the most I take at once; try again in a minute."
                )
            self._total += 1
            self._by_user[user] = self._by_user.get(user, 0) + 1

        def run() -> None:
            try:
                work()
            except BaseException:  # a job boundary: one command's crash must not leak its slot
                log.exception("slow command crashed user=%s", user)
            finally:
                self._release(user)

        try:
            self._pool.submit(run)
        except RuntimeError:  # shut down: the bot is stopping
            self._release(user)
            return "I am restarting; try again in a minute."
        return None

    def _release(self, user: str) -> None:
        with self._lock:
            self._total -= 1
            left = self._by_user[user] - 1
            if left:
                self._by_user[user] = left
            else:
                del self._by_user[user]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
