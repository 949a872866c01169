"""What Slack says about channels and people, for bot.privacy: whether a channel is public
(conversations.info) and which channels a person is in (users.conversations). Answers are cached for a
while, in bounded caches; a lookup that fails answers with the safe side (private, not a member) and is not
cached. The decisions themselves are bot.privacy's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from bot.errors import DeliveryError
from bot.model import RuleSet
from bot.privacy import feeds_for_channel, followers, visible_feeds
from bot.slack import SlackClient

log = logging.getLogger(__name__)

MEMBERSHIP_TTL_SECONDS = 300.0  # someone who joins or leaves a channel is seen within this
MAX_CACHED = 5_000  # people, and channels, kept at once (least recently asked go first)
MAX_PAGES = 20  # users.conversations pages per person (1,000 channels each)


V = TypeVar("V")


class _Cache(Generic[V]):
    """At most `size` entries, each for `ttl` seconds."""

    def __init__(self, ttl: float, size: int, clock: Callable[[], float]) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self.clock():
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def user_channels(client: SlackClient, user: str) -> frozenset[str] | None:
    """The public and private channels `user` is in, as Slack says now (None when it cannot answer: then
    callers assume none). Uncached: ChannelDirectory keeps answers for a while, App Home asks afresh."""
    try:
        return frozenset(
            str(c["id"])
            for c in client.paginate(
                "users.conversations",
                "channels",
                user=user,
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                max_pages=MAX_PAGES,
            )
        )
    except DeliveryError as e:
        log.warning("cannot list the user's channels user=%s error=%s (none assumed)", user, e.error)
        return None


class ChannelDirectory:
    def __init__(
        self,
        client: SlackClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = MEMBERSHIP_TTL_SECONDS,
        size: int = MAX_CACHED,
    ) -> None:
        self.client = client
        self.clock, self.ttl = clock, ttl
        # Followers of each feed under the last rules asked about: merging asks once per watch owner.
        self._following: tuple[RuleSet, dict[str, frozenset[str]]] | None = None
        self._following_lock = threading.Lock()
        self._public: _Cache[bool] = _Cache(ttl, size, clock)
        self._members: _Cache[frozenset[str]] = _Cache(ttl, size, clock)

    def is_public(self, channel: str) -> bool:
        known = self._public.get(channel)
        if known is not None:
            return known
        try:
            info = self.client.call("conversations.info", channel=channel).get("channel", {})
        except DeliveryError as e:
            # channel_not_found is also what Slack says of a private channel the bot is not in.
            log.info("channel privacy unknown channel=%s error=%s (taken as private)", channel, e.error)
            return False
        public = not info.get("is_private", True) and not info.get("is_im") and not info.get("is_mpim")
        self._public.put(channel, public)
        return public

    def channels_of(self, user: str) -> frozenset[str]:
        known = self._members.get(user)
        if known is not None:
            return known
        channels = user_channels(self.client, user)
        if channels is None:
            return frozenset()
        self._members.put(user, channels)
        return channels

    def following(self, rules: RuleSet) -> dict[str, frozenset[str]]:
        """followers(rules), kept for the last rules asked about: a merge asks once per owner and channel."""
        with self._following_lock:
            if self._following is None or self._following[0] is not rules:
                self._following = (rules, followers(rules))
            return self._following[1]

    def visible_feeds(self, rules: RuleSet, user: str) -> frozenset[str]:
        """The feeds `user` may read under `rules` (bot.privacy.visible_feeds, with Slack's answers)."""
        following = self.following(rules)
        member_of = self.channels_of(user)
        # Privacy matters only for the followers of feeds that membership does not already open.
        unsettled = {c for chans in following.values() if not chans & member_of for c in chans}
        public = frozenset(channel for channel in unsettled if self.is_public(channel))
        return visible_feeds(rules, user, following, public_channels=public, member_of=member_of)

    def channel_feeds(self, rules: RuleSet, channel: str) -> frozenset[str]:
        """The feeds a subscription for every feed in `channel` may carry (bot.privacy.feeds_for_channel)."""
        following = self.following(rules)
        unsettled = {c for chans in following.values() if channel not in chans for c in chans}
        public = frozenset(c for c in unsettled if self.is_public(c))
        return feeds_for_channel(rules, channel, following, public_channels=public)
