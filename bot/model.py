"""Frozen values that flow through the bot: configuration, feed items, matches and outgoing messages.

Nothing here does I/O or imports a third-party library; every other module speaks in these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any


@dataclass(frozen=True)
class Location:
    """Where a value came from in a rules file, for error messages and `preview`."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Settings:
    interval_seconds: int = 300
    backfill: int = 1
    retention_seconds: int = 30 * 86400  # how long every polled item stays searchable
    admins: tuple[str, ...] = ()  # user IDs allowed to change subscriptions from Slack; empty: everyone
    max_alerts_per_cycle: int = 5  # per channel and poll; the rest go into one grouped message
    poll_concurrency: int = 8  # feeds fetched at once: waiting on slow hosts overlaps, the load stays bounded
    # Feeds added from Slack may be on private addresses (loopback, the LAN); cloud metadata stays refused.
    allow_private_feeds: bool = False
    feed_failure_notice_after: int = 10  # failed polls in a row before the feed's channels are told


@dataclass(frozen=True)
class AddedFeed:
    """A feed someone added from Slack (`/feeds add-feed`). Unlike the operator's feeds in rules.yaml its
    URL is untrusted: it is fetched over http(s) only, from public addresses only (bot.addresses)."""

    id: str
    url: str
    added_by: str  # user ID
    added_at: datetime
    title: str = ""  # what the feed called itself when it was added


@dataclass(frozen=True)
class FeedConfig:
    id: str
    url: str  # http(s) URL, or an absolute file path / file:// URL (relative paths are resolved on load)
    interval_seconds: int
    location: Location | None = None  # set for a feed of the rules file
    added: AddedFeed | None = None  # set for a feed added from Slack: fetched through the address guard
    # Who may read its items through the bot (search, latest, previews, personal watches): "public" for
    # everyone; "channels" for members of a channel that follows it, everyone once a public one does
    # (bot.privacy). The default is the safe one.
    visibility: str = "channels"


PRIORITIES = ("low", "normal", "high")


@dataclass(frozen=True)
class Escalation:
    """An unacknowledged alert gets a threaded reply mentioning `to` after `after_seconds`, `repeat` times."""

    after_seconds: int
    to: str  # a mention as written in the rules (see OnCall.mention)
    repeat: int = 1


@dataclass(frozen=True)
class DailyWindow:
    """Quiet hours: from `start` to `end` local time in `tz` (crossing midnight when end <= start)."""

    start: time
    end: time
    tz: str


@dataclass(frozen=True)
class DailyTime:
    """A digest's time of day, local time in `tz`."""

    at: time
    tz: str


@dataclass(frozen=True)
class OnCall:
    """How a channel entry's alerts page people. The defaults are a plain alert."""

    mention: str | None = None  # "@handle" (a user group), "<!subteam^ID>", "<@U…>", "@here" or "@channel"
    priority: str = "normal"  # low | normal | high
    ack: bool = False  # an Acknowledge button
    escalate: Escalation | None = None
    quiet_hours: DailyWindow | None = None
    digest: DailyTime | None = None

    @property
    def rank(self) -> int:
        return PRIORITIES.index(self.priority)


@dataclass(frozen=True)
class Subscription:
    """One term a person added to a channel from Slack (`/feeds subscribe`)."""

    channel: str
    term: str  # a keyword, or a boolean query's text when `is_query`
    feed: str | None  # None: every feed
    added_by: str  # user ID
    added_at: datetime
    is_query: bool = False

    @property
    def id(self) -> str:
        kind = "query\x1f" if self.is_query else ""
        return f"{self.channel}\x1f{self.feed or '*'}\x1f{kind}{self.term.casefold()}"


@dataclass(frozen=True)
class ChannelRule:
    """One entry under `channels:`. Entries are independent: `exclude` applies within its own entry."""

    channel: str  # a channel ID once resolved; "#name" straight from the file
    keywords: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    feeds: tuple[str, ...] | None = None  # None: every feed
    location: Location | None = None  # set for an entry of the rules file
    subscription: Subscription | None = None  # set for a term added from Slack
    oncall: OnCall = OnCall()
    query: str | None = None  # a boolean query (bot.query); the entry alerts when it or a keyword matches

    def applies_to(self, feed_id: str) -> bool:
        return self.feeds is None or feed_id in self.feeds


@dataclass(frozen=True)
class RuleSet:
    settings: Settings
    feeds: tuple[FeedConfig, ...]
    channels: tuple[ChannelRule, ...]
    path: str = "rules.yaml"

    def feed(self, feed_id: str) -> FeedConfig | None:
        return next((f for f in self.feeds if f.id == feed_id), None)


@dataclass(frozen=True)
class Item:
    """One feed entry, reduced to what matching, rendering and de-duplication need."""

    feed_id: str
    key: str  # identity: guid without tracking parameters, else link, else a hash of title and date
    link: str  # canonical link (tracking parameters removed); "" when the entry has none
    title: str
    summary: str = ""  # plain text, HTML stripped, entities decoded once, whitespace collapsed
    author: str = ""
    published: datetime | None = None  # timezone-aware UTC
    thumbnail: str | None = None  # absolute http(s) image URL

    def to_dict(self) -> dict[str, Any]:
        return {
            "feed_id": self.feed_id,
            "key": self.key,
            "link": self.link,
            "title": self.title,
            "summary": self.summary,
            "author": self.author,
            "published": self.published.isoformat() if self.published else None,
            "thumbnail": self.thumbnail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        published = data.get("published")
        return cls(
            feed_id=data["feed_id"],
            key=data["key"],
            link=data.get("link", ""),
            title=data.get("title", ""),
            summary=data.get("summary", ""),
            author=data.get("author", ""),
            published=datetime.fromisoformat(published) if published else None,
            thumbnail=data.get("thumbnail"),
        )


@dataclass(frozen=True)
class ParsedFeed:
    title: str
    items: tuple[Item, ...]
    warning: str | None = None  # the parser recovered from a problem (bozo) but still found items


@dataclass(frozen=True)
class ChannelMatch:
    """An item matched by one or more entries of one channel: posted there once, listing every keyword."""

    channel: str
    item: Item
    keywords: tuple[str, ...]  # as written in the rules, in rule order, without repeats
    rules: tuple[ChannelRule, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class RuleVerdict:
    """How one rule judged one item (for `preview`): matched keywords, and what excluded it if anything."""

    rule: ChannelRule
    keywords: tuple[str, ...]
    excluded_by: tuple[str, ...] = ()

    @property
    def matched(self) -> bool:
        return bool(self.keywords) and not self.excluded_by


@dataclass(frozen=True)
class Message:
    """A rendered Slack message for one (channel, item)."""

    channel: str
    text: str  # notification fallback
    blocks: tuple[dict[str, Any], ...]
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "channel": self.channel,
            "text": self.text,
            "metadata": self.metadata,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if self.blocks:  # a plain-text message has none, and sends no empty list
            payload["blocks"] = list(self.blocks)
        return payload


@dataclass(frozen=True)
class FetchResult:
    """A fetch's outcome: the body, or `not_modified` when the server answered 304."""

    not_modified: bool
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    url: str = ""
    max_age: float | None = None  # seconds the host says this answer stays fresh (Cache-Control)
