"""Seen state, deliveries and pending alerts: an in-memory index behind one lock, persisted by a backend.

The `Store` owns the rules of remembering (what counts as seen or delivered, pruning, pending retries);
a backend only makes it durable: TinyDB files on disk (bot.storage), or a dict for tests. No I/O here.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from bot import feed_limits
from bot.feed_limits import archive_overflow, archived_bytes, heaviest_first, keys_to_forget
from bot.health import FeedHealth, health_from_doc, health_to_doc
from bot.model import AddedFeed, ChannelMatch, Item, Subscription
from bot.oncall import OpenAlert, QueuedAlert, alert_from_doc, alert_to_doc

SEEN_RETENTION = timedelta(days=30)  # a key no longer in its feed is forgotten after this (or sooner:
# past feed_limits.SEEN_KEYS_BEYOND_FEED keys gone from it, the ones gone longest are)
DELIVERED_RETENTION = timedelta(days=90)  # longer: an old article that resurfaces is still not reposted
ACKED_RETENTION = timedelta(
    days=7
)  # an acknowledged alert is kept a while, so a late second click is harmless
# How often the stored keys and deliveries are swept for ones past their retention: a sweep reads them
# all, so it runs with the first cycle of the hour, not with every cycle.
SWEEP_EVERY = timedelta(hours=1)
# A key still in its feed has its "last present" stamp renewed only this often, so an unchanged feed's
# keys are not rewritten every cycle; retention is measured in days, so a day's slack is harmless.
SEEN_RENEWAL = timedelta(days=1)
TABLES = (
    "feeds",
    "seen",  # one document per (feed, key): a cycle writes only the keys it adds
    "delivered",  # one document per (channel, delivery key)
    "channels",  # before 0.5: every delivery of a channel in one document; moved to "delivered" on load
    "pending",
    "meta",
    "uncertain",
    "subscriptions",
    "pauses",
    "open",
    "queued",
    "broken",  # channels Slack says cannot take posts (archived, deleted, bot not invited)
    "added_feeds",  # feeds added from Slack, merged with the rules file's
)

Changes = dict[str, dict[str, dict[str, Any] | None]]  # table -> doc id -> doc (None: removed)


class Backend(Protocol):
    """Where state lives between runs.

    `load` returns every table as {doc id: doc}; `write` applies one cycle's changed docs atomically;
    `log_delivery` makes one delivery durable at once (small and cheap); `read_deliveries` returns the
    ones not yet folded into a `write`, and `clear_deliveries` forgets them once a `write` holds them.
    """

    def load(self) -> dict[str, dict[str, dict[str, Any]]]: ...
    def write(self, changes: Changes) -> None: ...
    def log_delivery(self, record: dict[str, Any]) -> None: ...
    def read_deliveries(self) -> list[dict[str, Any]]: ...
    def clear_deliveries(self) -> None: ...
    def load_archive(self) -> dict[str, dict[str, Any]]: ...
    def write_archive(self, changes: dict[str, dict[str, Any] | None]) -> None: ...
    def close(self) -> None: ...


class MemoryBackend:
    """Keeps a serialised copy, so a test can 'restart' by opening a new Store on the same backend."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in TABLES}
        self.deliveries: list[dict[str, Any]] = []
        self.archive: dict[str, dict[str, Any]] = {}
        self.writes = 0

    def load(self) -> dict[str, dict[str, dict[str, Any]]]:
        return copy.deepcopy(self.tables)

    def write(self, changes: Changes) -> None:
        for table, docs in changes.items():
            for doc_id, doc in docs.items():
                if doc is None:
                    self.tables[table].pop(doc_id, None)
                else:
                    self.tables[table][doc_id] = json.loads(json.dumps(doc))
        self.writes += 1

    def log_delivery(self, record: dict[str, Any]) -> None:
        self.deliveries.append(dict(record))

    def read_deliveries(self) -> list[dict[str, Any]]:
        return list(self.deliveries)

    def clear_deliveries(self) -> None:
        self.deliveries.clear()

    def load_archive(self) -> dict[str, dict[str, Any]]:
        return copy.deepcopy(self.archive)

    def write_archive(self, changes: dict[str, dict[str, Any] | None]) -> None:
        for key, doc in changes.items():
            if doc is None:
                self.archive.pop(key, None)
            else:
                self.archive[key] = json.loads(json.dumps(doc))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class ArchivedItem:
    item: Item
    archived_at: datetime

    @property
    def when(self) -> datetime:
        """Its publication time, else when the bot first saw it."""
        return self.item.published or self.archived_at


@dataclass(frozen=True)
class Pause:
    channel: str
    until: datetime
    by: str


@dataclass(frozen=True)
class RecoveredDelivery:
    """An alert found in a channel's history by its metadata: delivered before the state was lost."""

    channel: str
    key: str  # delivery_key of the item
    link: str
    at: datetime


@dataclass(frozen=True)
class ChannelProblem:
    """A channel Slack refused a post to for a reason only a person can fix: since when, and when the bot
    last tried (it tries again hourly, not with every alert)."""

    channel: str
    error: str
    since: datetime
    last_try: datetime


@dataclass(frozen=True)
class FeedState:
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    first_polled: datetime | None = None
    last_polled: datetime | None = None


@dataclass(frozen=True)
class PendingAlert:
    """An alert Slack has not accepted yet; retried until it has."""

    id: str
    match: ChannelMatch
    source: str
    created: datetime
    attempts: int = 0
    next_attempt: datetime | None = None
    last_error: str = ""
    failed_at: datetime | None = None
    blocked_everywhere: bool = False  # failed with Slack as a whole (outage, token): due when Slack is back
    held: bool = False  # not failed but held by a pause of its channel: due when the pause ends


@dataclass
class CycleChange:
    """What one poll of one feed learned; committed in one write."""

    feed_id: str
    polled_at: datetime
    keys_in_feed: Iterable[str] = ()
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    new_pending: list[PendingAlert] = field(default_factory=list)
    items: Iterable[Item] = ()  # every item of the poll, for the archive (search, latest)
    new_queued: list[QueuedAlert] = field(default_factory=list)
    added_feed: bool = False  # a feed added from Slack: committed only while it is still there


def _pair(first: str, second: str) -> str:
    """A document's name from two parts (feed and key, channel and key), split at the first \x1f: feed
    ids and channels never hold one (a delivery key may)."""
    return f"{first}\x1f{second}"


class _DocsView:
    """A table whose documents are built from an index when written: `get(name)`, as _flush asks."""

    def __init__(self, build: Callable[[str], dict[str, Any] | None]) -> None:
        self.get = build


def delivery_key(item: Item) -> str:
    """An item's identity across feeds. A URL guid names the article wherever it appears; any other guid
    ("1001", "t3_abc") only means something within its own feed, so two feeds' "1001" stay two items."""
    if item.key.startswith(("http://", "https://")):
        return item.key
    return f"{item.feed_id}\x1f{item.key}"


def pending_id(channel: str, item: Item) -> str:
    return f"{channel}\x1f{delivery_key(item)}"


def _match_doc(match: ChannelMatch, source: str) -> dict[str, Any]:
    """The part of a pending or queued alert's document that says what to post where."""
    return {
        "channel": match.channel,
        "item": match.item.to_dict(),
        "keywords": list(match.keywords),
        "source": source,
    }


def _match_from_doc(doc: dict[str, Any]) -> ChannelMatch:
    return ChannelMatch(doc["channel"], Item.from_dict(doc["item"]), tuple(doc["keywords"]))


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Store:
    """All reads come from memory; every public method takes the one lock (TinyDB is not thread-safe)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock = threading.RLock()
        tables = backend.load()
        # TinyDB numbers documents; we key them by name, keeping a name -> doc id map per table.
        self._ids: dict[str, dict[str, str]] = {name: {} for name in TABLES}
        self._feeds: dict[str, dict[str, Any]] = {}
        # Keys by feed, with when each was last present in it (see SEEN_RENEWAL).
        self._seen: dict[str, dict[str, str]] = {}
        # Deliveries by channel: delivery key -> its document; and its links -> when.
        self._delivered: dict[str, dict[str, dict[str, Any]]] = {}
        self._links: dict[str, dict[str, str]] = {}
        self._legacy_channels: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # Posts whose outcome is unknown (Slack may have them): pending id -> since when.
        self._uncertain: dict[str, dict[str, Any]] = {}
        self._subscriptions: dict[str, dict[str, Any]] = {}
        self._pauses: dict[str, dict[str, Any]] = {}
        self._open: dict[str, dict[str, Any]] = {}  # alerts with an Acknowledge button (bot.oncall)
        self._queued: dict[str, dict[str, Any]] = {}  # alerts waiting for a grouped message (bot.oncall)
        self._broken: dict[str, dict[str, Any]] = {}  # channel -> its ChannelProblem
        self._added_feeds: dict[str, dict[str, Any]] = {}
        # Every polled item, by delivery key, in a file of its own: it is large and changes only when a
        # feed publishes, so the main file's per-cycle write stays small.
        self._archive: dict[str, dict[str, Any]] = {}
        self._archive_dirty: set[str] = set()
        # Its size by feed, so that its bounds (feed_limits) cost nothing while they are not reached.
        self._archive_keys: dict[str, set[str]] = {}
        self._archive_sizes: dict[str, int] = {}
        self._archive_feed_bytes: dict[str, int] = {}
        for key, doc in backend.load_archive().items():
            self._archive_add(key, doc)
        for name, target, key_field in (
            ("feeds", self._feeds, "feed_id"),
            ("channels", self._legacy_channels, "channel"),
            ("pending", self._pending, "id"),
            ("meta", self._meta, "key"),
            ("uncertain", self._uncertain, "id"),
            ("subscriptions", self._subscriptions, "id"),
            ("pauses", self._pauses, "channel"),
            ("open", self._open, "id"),
            ("queued", self._queued, "id"),
            ("broken", self._broken, "channel"),
            ("added_feeds", self._added_feeds, "id"),
        ):
            for doc_id, doc in tables.get(name, {}).items():
                target[doc[key_field]] = doc
                self._ids[name][doc[key_field]] = doc_id
        self._next_id = {name: max((int(i) for i in tables.get(name, {})), default=0) + 1 for name in TABLES}
        self._dirty: dict[str, set[str]] = {name: set() for name in TABLES}
        for doc_id, doc in tables.get("seen", {}).items():
            self._seen.setdefault(doc["feed_id"], {})[doc["key"]] = doc["at"]
            self._ids["seen"][_pair(doc["feed_id"], doc["key"])] = doc_id
        for doc_id, doc in tables.get("delivered", {}).items():
            self._index_delivery(doc)
            self._ids["delivered"][_pair(doc["channel"], doc["key"])] = doc_id
        self._move_legacy_state()
        self._swept_at: datetime | None = None
        # Deliveries from a run that stopped before its cycle was written: fold them in now.
        for record in backend.read_deliveries():
            if record.get("kind") == "uncertain":
                self._remember_uncertain(
                    record["id"], record.get("channel", ""), record.get("link", ""), record["at"]
                )
            else:
                self._remember_delivery(
                    record["channel"], record["key"], record.get("link", ""), record["at"]
                )
                self._drop_pending(f"{record['channel']}\x1f{record['key']}")
                if record.get("open"):
                    self._remember_open(record["open"])
        if any(self._dirty.values()):
            self._flush()

    @property
    def backend(self) -> Backend:
        return self._backend

    @classmethod
    def in_memory(cls, backend: MemoryBackend | None = None) -> Store:
        return cls(backend or MemoryBackend())

    # -- feeds -------------------------------------------------------------------------------------

    def feed_state(self, feed_id: str) -> FeedState | None:
        """None until the feed's first poll has been committed: that poll is the backfill. (A feed that has
        only ever failed has a document, for its health, but no first poll.)"""
        with self._lock:
            doc = self._feeds.get(feed_id)
            if doc is None or "first_polled" not in doc:
                return None
            return FeedState(
                etag=doc.get("etag"),
                last_modified=doc.get("last_modified"),
                body_hash=doc.get("body_hash"),
                first_polled=_parse_time(doc.get("first_polled")),
                last_polled=_parse_time(doc.get("last_polled")),
            )

    def feed_health(self, feed_id: str) -> FeedHealth:
        with self._lock:
            return health_from_doc(self._feeds.get(feed_id, {}).get("health"))

    def record_feed_health(self, feed_id: str, health: FeedHealth) -> None:
        """Written at once when it changed: a restart must know how long a feed has been failing (for its
        backoff, and so as not to repeat a notice). A feed that keeps working writes nothing."""
        with self._lock:
            doc = self._feeds.get(feed_id)
            if health_from_doc(doc.get("health") if doc else None) == health:
                return
            doc = self._feeds.setdefault(feed_id, {"feed_id": feed_id})
            doc["health"] = health_to_doc(health)
            self._dirty["feeds"].add(feed_id)
            self._flush()

    def update_feed_headers(self, feed_id: str, etag: str | None, last_modified: str | None) -> None:
        """New caching headers for an unchanged body; written at once (rare, and cheap to get wrong)."""
        with self._lock:
            doc = self._feeds.get(feed_id)
            if doc is not None:
                doc.update(etag=etag, last_modified=last_modified)
                self._dirty["feeds"].add(feed_id)
                self._flush()

    def unseen(self, feed_id: str, items: Iterable[Item]) -> list[Item]:
        with self._lock:
            seen = self._seen.get(feed_id, {})
            return [item for item in items if item.key not in seen]

    def seen_count(self, feed_id: str) -> int:
        with self._lock:
            return len(self._seen.get(feed_id, {}))

    # -- channels ----------------------------------------------------------------------------------

    def is_delivered(self, channel: str, item: Item) -> bool:
        """By identity key or canonical link: the same article through two feeds or two guids is one."""
        with self._lock:
            if delivery_key(item) in self._delivered.get(channel, {}):
                return True
            return bool(item.link) and item.link in self._links.get(channel, {})

    def record_delivery(
        self, channel: str, item: Item, at: datetime, open_alert: OpenAlert | None = None
    ) -> None:
        """Durable at once (the outbox), so a crash later in the cycle never reposts this one. An alert
        waiting for an acknowledgement is recorded with it, so its escalation timer survives a crash too."""
        with self._lock:
            record: dict[str, Any] = {
                "channel": channel,
                "key": delivery_key(item),
                "link": item.link,
                "at": _iso(at),
            }
            if open_alert is not None:
                record["open"] = alert_to_doc(open_alert)
            # Memory first: if the outbox cannot be written, this process still never reposts it.
            self._remember_delivery(channel, record["key"], item.link, record["at"])
            self._drop_pending(pending_id(channel, item))
            if open_alert is not None:
                self._remember_open(record["open"])
            self._backend.log_delivery(record)

    def _remember_open(self, doc: dict[str, Any]) -> None:
        if doc["id"] not in self._open:  # an acknowledgement already recorded wins over a replayed post
            self._open[doc["id"]] = doc
            self._dirty["open"].add(doc["id"])

    # -- open alerts (acknowledgements and escalations; written at once) ----------------------------

    def open_alerts(self, channel: str | None = None) -> list[OpenAlert]:
        with self._lock:
            docs = [d for d in self._open.values() if channel is None or d["channel"] == channel]
        return sorted((alert_from_doc(d) for d in docs), key=lambda alert: alert.posted_at)

    def open_alert(self, alert_id: str) -> OpenAlert | None:
        with self._lock:
            doc = self._open.get(alert_id)
        return alert_from_doc(doc) if doc else None

    def acknowledge(self, alert_id: str, user: str, at: datetime) -> OpenAlert | None:
        """Records the first acknowledgement (a second one changes nothing); None for an unknown alert."""
        with self._lock:
            doc = self._open.get(alert_id)
            if doc is None:
                return None
            if doc.get("acked_by") is None:
                doc.update(acked_by=user, acked_at=_iso(at))
                self._dirty["open"].add(alert_id)
                self._flush()
            return alert_from_doc(doc)

    def record_escalation_attempt(self, alert_id: str, step: int) -> None:
        """Written before an escalation reply is posted: a retry looks in the thread before posting."""
        with self._lock:
            doc = self._open.get(alert_id)
            if doc is not None and step != doc.get("escalation_attempt"):
                doc["escalation_attempt"] = step
                self._dirty["open"].add(alert_id)
                self._flush()

    def record_escalation(self, alert_id: str, step: int) -> None:
        with self._lock:
            doc = self._open.get(alert_id)
            if doc is not None and step > doc.get("escalations_sent", 0):
                doc["escalations_sent"] = step
                self._dirty["open"].add(alert_id)
                self._flush()

    def record_uncertain(self, channel: str, item: Item, at: datetime) -> None:
        """Marks a post whose outcome is not known: written before each post and kept when Slack's answer is
        lost. Durable at once, so even after a kill mid-request the next attempt looks in the channel
        first instead of posting again. A recorded delivery clears it."""
        with self._lock:
            alert_id = pending_id(channel, item)
            if alert_id in self._uncertain:
                return  # keep the earliest time: the search must reach back to the first attempt
            record = {
                "kind": "uncertain",
                "id": alert_id,
                "channel": channel,
                "link": item.link,
                "at": _iso(at),
            }
            self._remember_uncertain(alert_id, channel, item.link, record["at"])
            self._backend.log_delivery(record)

    def clear_uncertain(self, channel: str, item: Item) -> None:
        """Slack surely did not post it (it refused the request): the next attempt need not look first. Not
        written at once; a marker that outlives a crash only costs one history lookup."""
        with self._lock:
            alert_id = pending_id(channel, item)
            if self._uncertain.pop(alert_id, None) is not None:
                self._dirty["uncertain"].add(alert_id)

    def uncertain_since(self, channel: str, item: Item) -> datetime | None:
        """Since when a post of this article to this channel may have landed: under this item's key, or
        under another key with the same link (the same article from another feed)."""
        with self._lock:
            times = [
                doc["since"]
                for alert_id, doc in self._uncertain.items()
                if alert_id == pending_id(channel, item)
                or (item.link and doc.get("channel") == channel and doc.get("link") == item.link)
            ]
            return _parse_time(min(times)) if times else None

    def _remember_uncertain(self, alert_id: str, channel: str, link: str, at: str) -> None:
        if alert_id not in self._uncertain:
            self._uncertain[alert_id] = {"id": alert_id, "channel": channel, "link": link, "since": at}
            self._dirty["uncertain"].add(alert_id)

    def _remember_delivery(self, channel: str, key: str, link: str, at: str) -> None:
        # Delivered: no attempt of this article, under any key, needs to look in the channel any more.
        for alert_id, doc in list(self._uncertain.items()):
            if alert_id == f"{channel}\x1f{key}" or (
                link and doc.get("channel") == channel and doc.get("link") == link
            ):
                del self._uncertain[alert_id]
                self._dirty["uncertain"].add(alert_id)
        self._index_delivery({"channel": channel, "key": key, "link": link, "at": at})
        self._dirty["delivered"].add(_pair(channel, key))

    def _index_delivery(self, doc: dict[str, Any]) -> None:
        self._delivered.setdefault(doc["channel"], {})[doc["key"]] = doc
        if doc.get("link"):
            self._links.setdefault(doc["channel"], {})[doc["link"]] = doc["at"]

    def _seen_doc(self, name: str) -> dict[str, Any] | None:
        feed_id, key = name.split("\x1f", 1)
        at = self._seen.get(feed_id, {}).get(key)
        return None if at is None else {"feed_id": feed_id, "key": key, "at": at}

    def _delivered_doc(self, name: str) -> dict[str, Any] | None:
        channel, key = name.split("\x1f", 1)
        return self._delivered.get(channel, {}).get(key)

    def _move_legacy_state(self) -> None:
        """State written before seen keys and deliveries had a document each: move them over, once."""
        for feed_id, doc in self._feeds.items():
            for key, at in doc.pop("seen", {}).items():
                self._seen.setdefault(feed_id, {})[key] = at
                self._dirty["seen"].add(_pair(feed_id, key))
                self._dirty["feeds"].add(feed_id)
        for channel, doc in list(self._legacy_channels.items()):
            for key, at in doc.get("delivered", {}).items():
                self._index_delivery({"channel": channel, "key": key, "link": "", "at": at})
                self._dirty["delivered"].add(_pair(channel, key))
            for link, at in doc.get("links", {}).items():
                # The old format kept links apart from keys: each becomes a delivery of its own.
                self._index_delivery({"channel": channel, "key": "link:" + link, "link": link, "at": at})
                self._dirty["delivered"].add(_pair(channel, "link:" + link))
            del self._legacy_channels[channel]
            self._dirty["channels"].add(channel)

    # -- recovery after lost state -----------------------------------------------------------------

    def is_blank(self) -> bool:
        """Nothing polled, delivered or waiting: a first start, or a start after the files were wiped."""
        with self._lock:
            kept = (self._feeds, self._delivered, self._pending, self._queued, self._open, self._uncertain)
            return not any(kept)

    def record_recovery(
        self, newest_alert: datetime, deliveries: Iterable[RecoveredDelivery], feed_ids: Iterable[str]
    ) -> None:
        """State rebuilt from the bot's own messages after a wipe: their alerts count as delivered, and
        each feed's next poll takes as new only what was published after the newest of them."""
        with self._lock:
            for delivery in deliveries:
                self._remember_delivery(delivery.channel, delivery.key, delivery.link, _iso(delivery.at))
            self._meta["recovered"] = {
                "key": "recovered",
                "feeds": {feed_id: _iso(newest_alert) for feed_id in feed_ids},
            }
            self._dirty["meta"].add("recovered")
            self._flush()

    def recovered_until(self, feed_id: str) -> datetime | None:
        """For a feed not yet polled since state was recovered: when the bot's newest recovered alert was
        posted (what was published before counts as seen)."""
        with self._lock:
            stamp = (self._meta.get("recovered") or {}).get("feeds", {}).get(feed_id)
        return None if stamp is None else datetime.fromisoformat(stamp)

    # -- channel names -----------------------------------------------------------------------------

    def channel_ids(self) -> dict[str, str]:
        """The last '#name' -> ID map Slack gave, so a restart during a Slack outage still knows them."""
        with self._lock:
            return dict(self._meta.get("channel_ids", {}).get("value", {}))

    def remember_channel_ids(self, ids: dict[str, str]) -> None:
        with self._lock:
            merged = {**self.channel_ids(), **ids}
            self._meta["channel_ids"] = {"key": "channel_ids", "value": merged}
            self._dirty["meta"].add("channel_ids")
            self._flush()

    # -- pending -----------------------------------------------------------------------------------

    def pending(self) -> list[PendingAlert]:
        with self._lock:
            return [self._pending_from_doc(doc) for doc in self._pending.values()]

    def is_pending(self, channel: str, item: Item) -> bool:
        """Already waiting for this channel, under this item's key or its link (the same article)."""
        with self._lock:
            alert_id = pending_id(channel, item)
            if alert_id in self._pending or alert_id in self._queued:
                return True
            return bool(item.link) and any(
                doc["channel"] == channel and doc["item"].get("link") == item.link
                for doc in (*self._pending.values(), *self._queued.values())
            )

    def update_pending(self, alert: PendingAlert) -> None:
        with self._lock:
            self._pending[alert.id] = self._doc_from_pending(alert)
            self._dirty["pending"].add(alert.id)

    def discard_pending(self, alert_id: str) -> None:
        with self._lock:
            self._drop_pending(alert_id)

    def _drop_pending(self, alert_id: str) -> None:
        if alert_id in self._pending:
            del self._pending[alert_id]
            self._dirty["pending"].add(alert_id)
        if alert_id in self._queued:  # delivered in a grouped message
            del self._queued[alert_id]
            self._dirty["queued"].add(alert_id)

    # -- queued for a grouped message (digests, quiet hours, floods) ---------------------------------

    def queued(self) -> list[QueuedAlert]:
        with self._lock:
            docs = list(self._queued.values())
        return [self._queued_from_doc(doc) for doc in docs]

    def queue(self, alert: QueuedAlert) -> None:
        """Queues an alert outside a poll (a retried one that now falls in quiet hours or a digest)."""
        with self._lock:
            self._queued[alert.id] = self._doc_from_queued(alert)
            self._dirty["queued"].add(alert.id)

    def assign_group(self, alert_ids: Iterable[str], group: str) -> None:
        """Fixes which alerts one grouped message lists, durably, before it is posted: a retry after a
        lost answer or a crash posts (or finds) exactly that message, never a regrouped one."""
        with self._lock:
            for alert_id in alert_ids:
                doc = self._queued.get(alert_id)
                if doc is not None:
                    doc["group"] = group
                    self._dirty["queued"].add(alert_id)
            self._flush()

    def discard_queued(self, alert_id: str) -> None:
        with self._lock:
            if self._queued.pop(alert_id, None) is not None:
                self._dirty["queued"].add(alert_id)

    @staticmethod
    def _doc_from_queued(alert: QueuedAlert) -> dict[str, Any]:
        return {
            "id": alert.id,
            **_match_doc(alert.match, alert.source),
            "kind": alert.kind,
            "queued_at": _iso(alert.queued_at),
            "release_at": _iso(alert.release_at),
            "group": alert.group,
        }

    @staticmethod
    def _queued_from_doc(doc: dict[str, Any]) -> QueuedAlert:
        return QueuedAlert(
            id=doc["id"],
            match=_match_from_doc(doc),
            source=doc["source"],
            kind=doc["kind"],
            queued_at=datetime.fromisoformat(doc["queued_at"]),
            release_at=datetime.fromisoformat(doc["release_at"]),
            group=doc.get("group"),
        )

    @staticmethod
    def _doc_from_pending(alert: PendingAlert) -> dict[str, Any]:
        return {
            "id": alert.id,
            **_match_doc(alert.match, alert.source),
            "created": _iso(alert.created),
            "attempts": alert.attempts,
            "next_attempt": _iso(alert.next_attempt) if alert.next_attempt else None,
            "last_error": alert.last_error,
            "failed_at": _iso(alert.failed_at) if alert.failed_at else None,
            "blocked_everywhere": alert.blocked_everywhere,
            "held": alert.held,
        }

    @staticmethod
    def _pending_from_doc(doc: dict[str, Any]) -> PendingAlert:
        return PendingAlert(
            id=doc["id"],
            match=_match_from_doc(doc),
            source=doc["source"],
            created=datetime.fromisoformat(doc["created"]),
            attempts=doc.get("attempts", 0),
            next_attempt=_parse_time(doc.get("next_attempt")),
            last_error=doc.get("last_error", ""),
            failed_at=_parse_time(doc.get("failed_at")),
            blocked_everywhere=doc.get("blocked_everywhere", False),
            held=doc.get("held", False),
        )

    # -- writing -----------------------------------------------------------------------------------

    def commit_cycle(self, change: CycleChange) -> None:
        """One write for one poll: the feed's seen keys and caching headers, and new pending alerts."""
        with self._lock:
            if change.added_feed and change.feed_id not in self._added_feeds:
                # Removed from Slack while this poll ran: writing its seen keys back would make a later
                # add-feed of it no first poll, and post what it published meanwhile as news.
                return
            now = change.polled_at
            doc = self._feeds.setdefault(change.feed_id, {"feed_id": change.feed_id})
            doc.setdefault("first_polled", _iso(now))  # the document may be there already, for its health
            doc.update(
                etag=change.etag,
                last_modified=change.last_modified,
                body_hash=change.body_hash,
                last_polled=_iso(now),
            )
            seen = self._seen.setdefault(change.feed_id, {})
            stamp = _iso(now)
            renew_before = _iso(now - SEEN_RENEWAL)
            in_feed = set(change.keys_in_feed)
            for key in in_feed:
                if key not in seen or seen[key] < renew_before:
                    seen[key] = stamp
                    self._dirty["seen"].add(_pair(change.feed_id, key))
            if len(seen) > len(in_feed) + feed_limits.SEEN_KEYS_BEYOND_FEED:
                for key in keys_to_forget(seen, in_feed, feed_limits.SEEN_KEYS_BEYOND_FEED):
                    del seen[key]
                    self._dirty["seen"].add(_pair(change.feed_id, key))
            self._dirty["feeds"].add(change.feed_id)
            recovery = self._meta.get("recovered")
            if recovery is not None and change.feed_id in recovery["feeds"]:
                del recovery["feeds"][change.feed_id]  # its first poll after the wipe is done
                self._dirty["meta"].add("recovered")
            for alert in change.new_pending:
                if alert.id not in self._pending:  # an older record keeps its history (attempts, backoff)
                    self._pending[alert.id] = self._doc_from_pending(alert)
                    self._dirty["pending"].add(alert.id)
            for queued in change.new_queued:
                if queued.id not in self._queued:
                    self._queued[queued.id] = self._doc_from_queued(queued)
                    self._dirty["queued"].add(queued.id)
            for item in change.items:
                key = delivery_key(item)
                if key not in self._archive:
                    self._archive_add(key, {"key": key, "item": item.to_dict(), "archived_at": stamp})
                    self._archive_dirty.add(key)
            self._bound_archive(change.feed_id)
            if self._swept_at is None or now - self._swept_at >= SWEEP_EVERY:
                self._sweep(now)
            self._flush()

    def commit(self) -> None:
        """Writes whatever changed outside a poll (pending retries)."""
        with self._lock:
            if any(self._dirty.values()) or self._archive_dirty:
                self._flush()

    # -- archive -----------------------------------------------------------------------------------

    def archived(self, since: datetime | None = None) -> list[ArchivedItem]:
        """Every archived item (published, or first seen, at or after `since`), newest first."""
        with self._lock:
            entries = [
                ArchivedItem(Item.from_dict(doc["item"]), datetime.fromisoformat(doc["archived_at"]))
                for doc in self._archive.values()
            ]
        if since is not None:
            entries = [entry for entry in entries if entry.when >= since]
        return sorted(entries, key=lambda entry: entry.when, reverse=True)

    def archived_item(self, key: str) -> Item | None:
        """By delivery key (see delivery_key)."""
        with self._lock:
            doc = self._archive.get(key)
            return Item.from_dict(doc["item"]) if doc else None

    def prune_archive(self, now: datetime, retention: timedelta) -> int:
        """Forgets items first seen more than `retention` ago, and the oldest of any feed over its bounds
        (an archive written before them, or by a feed that has not published since); returns how many."""
        with self._lock:
            horizon = _iso(now - retention)
            stale = [key for key, doc in self._archive.items() if doc["archived_at"] < horizon]
            for key in stale:
                self._archive_drop(key)
            before = len(self._archive)
            for feed_id in list(self._archive_keys):
                self._bound_archive(feed_id)
            pruned = len(stale) + before - len(self._archive)
            if pruned:
                self._flush()
            return pruned

    def _archive_add(self, key: str, doc: dict[str, Any]) -> None:
        feed_id = doc["item"]["feed_id"]
        size = archived_bytes(doc)
        self._archive[key] = doc
        self._archive_keys.setdefault(feed_id, set()).add(key)
        self._archive_sizes[key] = size
        self._archive_feed_bytes[feed_id] = self._archive_feed_bytes.get(feed_id, 0) + size

    def _archive_drop(self, key: str) -> None:
        feed_id = self._archive.pop(key)["item"]["feed_id"]
        self._archive_keys[feed_id].discard(key)
        self._archive_feed_bytes[feed_id] -= self._archive_sizes.pop(key)
        self._archive_dirty.add(key)

    def _bound_archive(self, feed_id: str) -> None:
        """Keeps the feed's archive, and the whole archive, within feed_limits, dropping the oldest items
        (by when archived, then published) of the feed over its bound, or of the feeds holding the most."""
        keys = self._archive_keys.get(feed_id, set())
        if (
            len(keys) > feed_limits.ARCHIVE_ITEMS_PER_FEED
            or self._archive_feed_bytes.get(feed_id, 0) > feed_limits.ARCHIVE_BYTES_PER_FEED
        ):
            for key in archive_overflow(
                self._archive_entries(keys),
                max_items=feed_limits.ARCHIVE_ITEMS_PER_FEED,
                max_bytes=feed_limits.ARCHIVE_BYTES_PER_FEED,
            ):
                self._archive_drop(key)
        total = sum(self._archive_feed_bytes.values())
        shares = heaviest_first(self._archive_feed_bytes, total, feed_limits.ARCHIVE_BYTES_TOTAL)
        for heavy, excess in shares.items():
            keys = self._archive_keys[heavy]
            allowed = self._archive_feed_bytes[heavy] - excess
            for key in archive_overflow(self._archive_entries(keys), max_items=len(keys), max_bytes=allowed):
                self._archive_drop(key)

    def _archive_entries(self, keys: Iterable[str]) -> list[tuple[str, str, str, int]]:
        return [
            (
                key,
                self._archive[key]["archived_at"],
                self._archive[key]["item"].get("published") or "",
                self._archive_sizes[key],
            )
            for key in keys
        ]

    def recent_deliveries(self, limit: int, channels: Iterable[str]) -> list[tuple[str, str, datetime]]:
        """The newest (channel, delivery key, when) deliveries to these channels, newest first."""
        with self._lock:
            entries = [
                (channel, key, doc["at"])
                for channel in set(channels)
                for key, doc in self._delivered.get(channel, {}).items()
                if not key.startswith("link:")
            ]
        entries.sort(key=lambda entry: entry[2], reverse=True)
        return [(channel, key, datetime.fromisoformat(at)) for channel, key, at in entries[:limit]]

    # -- subscriptions and pauses (from Slack; written at once) ------------------------------------

    def subscriptions(self, channel: str | None = None) -> list[Subscription]:
        with self._lock:
            docs = [
                doc for doc in self._subscriptions.values() if channel is None or doc["channel"] == channel
            ]
        return [
            Subscription(
                channel=doc["channel"],
                term=doc["term"],
                feed=doc.get("feed"),
                added_by=doc.get("added_by", ""),
                added_at=datetime.fromisoformat(doc["added_at"]),
                is_query=doc.get("is_query", False),
            )
            for doc in sorted(docs, key=lambda doc: doc["added_at"])
        ]

    def add_subscriptions(self, subscriptions: Iterable[Subscription]) -> list[Subscription]:
        """Adds those not there yet (same channel, feed and term, ignoring case); returns the added ones."""
        with self._lock:
            added = []
            for subscription in subscriptions:
                if subscription.id in self._subscriptions:
                    continue
                self._subscriptions[subscription.id] = {
                    "id": subscription.id,
                    "channel": subscription.channel,
                    "term": subscription.term,
                    "feed": subscription.feed,
                    "added_by": subscription.added_by,
                    "added_at": _iso(subscription.added_at),
                    "is_query": subscription.is_query,
                }
                self._dirty["subscriptions"].add(subscription.id)
                added.append(subscription)
            if added:
                self._flush()
            return added

    def remove_subscriptions(self, subscriptions: Iterable[Subscription]) -> None:
        with self._lock:
            for subscription in subscriptions:
                if self._subscriptions.pop(subscription.id, None) is not None:
                    self._dirty["subscriptions"].add(subscription.id)
            if self._dirty["subscriptions"]:
                self._flush()

    def added_feeds(self) -> list[AddedFeed]:
        """Feeds added from Slack, oldest first."""
        with self._lock:
            docs = sorted(self._added_feeds.values(), key=lambda doc: doc["added_at"])
        return [
            AddedFeed(
                id=doc["id"],
                url=doc["url"],
                added_by=doc.get("added_by", ""),
                added_at=datetime.fromisoformat(doc["added_at"]),
                title=doc.get("title", ""),
            )
            for doc in docs
        ]

    def add_feed(self, feed: AddedFeed) -> bool:
        """Adds it unless a feed with its id was added before; returns whether it was added."""
        with self._lock:
            if feed.id in self._added_feeds:
                return False
            self._added_feeds[feed.id] = {
                "id": feed.id,
                "url": feed.url,
                "added_by": feed.added_by,
                "added_at": _iso(feed.added_at),
                "title": feed.title,
            }
            self._dirty["added_feeds"].add(feed.id)
            self._flush()
            return True

    def remove_feed(self, feed_id: str) -> bool:
        """Forgets a feed added from Slack; returns whether there was one."""
        with self._lock:
            if self._added_feeds.pop(feed_id, None) is None:
                return False
            self._dirty["added_feeds"].add(feed_id)
            self._flush()
            return True

    def forget_feed(self, feed_id: str) -> None:
        """Drops a feed's caching headers and seen keys, so that if it comes back its first poll is a first
        poll again (backfill, no flood) rather than a flood of everything published meanwhile. Its items
        stay in the archive until the retention ends."""
        with self._lock:
            if self._feeds.pop(feed_id, None) is not None:
                self._dirty["feeds"].add(feed_id)
            for key in self._seen.pop(feed_id, {}):
                self._dirty["seen"].add(_pair(feed_id, key))
            self._flush()

    def pause(self, channel: str, until: datetime, by: str) -> None:
        with self._lock:
            self._pauses[channel] = {"channel": channel, "until": _iso(until), "by": by}
            self._dirty["pauses"].add(channel)
            self._flush()

    def pause_of(self, channel: str, now: datetime) -> Pause | None:
        """The channel's pause, if it is still running at `now`."""
        with self._lock:
            doc = self._pauses.get(channel)
        if doc is None or datetime.fromisoformat(doc["until"]) <= now:
            return None
        return Pause(channel, datetime.fromisoformat(doc["until"]), doc.get("by", ""))

    def channel_problem(self, channel: str) -> ChannelProblem | None:
        with self._lock:
            doc = self._broken.get(channel)
        return None if doc is None else _channel_problem(doc)

    def channel_problems(self) -> list[ChannelProblem]:
        with self._lock:
            return [_channel_problem(doc) for doc in self._broken.values()]

    def record_channel_problem(self, channel: str, error: str, at: datetime) -> ChannelProblem:
        """Written at once: the mark must outlive a restart, or the bot would try every alert again."""
        with self._lock:
            doc = self._broken.get(channel)
            since = doc["since"] if doc is not None and doc["error"] == error else _iso(at)
            self._broken[channel] = {"channel": channel, "error": error, "since": since, "last_try": _iso(at)}
            self._dirty["broken"].add(channel)
            self._flush()
            return _channel_problem(self._broken[channel])

    def clear_channel_problem(self, channel: str) -> bool:
        with self._lock:
            if self._broken.pop(channel, None) is None:
                return False
            self._dirty["broken"].add(channel)
            self._flush()
            return True

    def resume(self, channel: str) -> int:
        """Ends the channel's pause; its held alerts are due at once. Returns how many were held."""
        with self._lock:
            if self._pauses.pop(channel, None) is not None:
                self._dirty["pauses"].add(channel)
            held = 0
            for alert_id, doc in self._pending.items():
                if doc["channel"] == channel and doc.get("held"):
                    doc.update(next_attempt=None, held=False)
                    self._dirty["pending"].add(alert_id)
                    held += 1
            self._flush()
            return held

    def _sweep(self, now: datetime) -> None:
        """Forgets keys gone from their feed and deliveries past their retention (reads them all)."""
        self._swept_at = now
        seen_horizon = _iso(now - SEEN_RETENTION)
        for feed_id, seen in self._seen.items():
            for key in [key for key, at in seen.items() if at < seen_horizon]:
                del seen[key]
                self._dirty["seen"].add(_pair(feed_id, key))
        horizon = _iso(now - DELIVERED_RETENTION)
        acked_horizon = _iso(now - ACKED_RETENTION)
        for alert_id in [
            i
            for i, doc in self._open.items()
            if doc["posted_at"] < horizon or (doc.get("acked_at") and doc["acked_at"] < acked_horizon)
        ]:
            del self._open[alert_id]
            self._dirty["open"].add(alert_id)
        for alert_id in [i for i, doc in self._uncertain.items() if doc["since"] < horizon]:
            del self._uncertain[alert_id]  # its alert was dropped long ago (its channel left the rules)
            self._dirty["uncertain"].add(alert_id)
        for channel, deliveries in self._delivered.items():
            for key in [key for key, doc in deliveries.items() if doc["at"] < horizon]:
                del deliveries[key]
                self._dirty["delivered"].add(_pair(channel, key))
            links = self._links.get(channel, {})
            for link in [link for link, at in links.items() if at < horizon]:
                del links[link]

    def _flush(self) -> None:
        if self._archive_dirty:
            # Before the main file: an item the main file calls seen is always searchable.
            self._backend.write_archive({key: self._archive.get(key) for key in self._archive_dirty})
            self._archive_dirty.clear()
        sources: dict[str, Any] = {
            "feeds": self._feeds,
            "seen": _DocsView(self._seen_doc),
            "delivered": _DocsView(self._delivered_doc),
            "channels": self._legacy_channels,
            "pending": self._pending,
            "meta": self._meta,
            "uncertain": self._uncertain,
            "subscriptions": self._subscriptions,
            "pauses": self._pauses,
            "open": self._open,
            "queued": self._queued,
            "broken": self._broken,
            "added_feeds": self._added_feeds,
        }
        changes: Changes = {}
        for table, names in self._dirty.items():
            docs: dict[str, dict[str, Any] | None] = {}
            for name in names:
                doc_id = self._ids[table].get(name)
                doc = sources[table].get(name)
                if doc_id is None:
                    if doc is None:
                        continue
                    doc_id = self._ids[table][name] = str(self._next_id[table])
                    self._next_id[table] += 1
                if doc is None:
                    del self._ids[table][name]
                docs[doc_id] = doc
            if docs:
                changes[table] = docs
        self._backend.write(changes)
        # The main file now holds every delivery logged so far, so the outbox can go.
        self._backend.clear_deliveries()
        for names in self._dirty.values():
            names.clear()

    def close(self) -> None:
        with self._lock:
            if any(self._dirty.values()) or self._archive_dirty:
                self._flush()
            self._backend.close()


def _channel_problem(doc: dict[str, Any]) -> ChannelProblem:
    return ChannelProblem(
        doc["channel"],
        doc["error"],
        datetime.fromisoformat(doc["since"]),
        datetime.fromisoformat(doc["last_try"]),
    )
