"""Rebuilding lost state from the bot's own Slack messages, pure: which alerts were delivered, and when
the bot last posted one.

A host that wipes local files at every restart (many Procfile hosts do, at least daily) would otherwise
start each time as on a first poll: its backfill reposted, or news of the gap dropped. Every alert the
bot posts carries message metadata naming its item (bot.blocks.alert_metadata), and the bot is a member
of the channels it posts to, so their history says what was delivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.blocks import ALERT_EVENT_TYPE, GROUP_EVENT_TYPE
from bot.model import Item
from bot.store import RecoveredDelivery, delivery_key


@dataclass(frozen=True)
class Recovery:
    deliveries: tuple[RecoveredDelivery, ...]
    newest_alert: datetime | None  # None: no alert of this bot found, so a first poll it is


def recover_deliveries(messages: Iterable[tuple[str, Mapping[str, Any]]], *, bot_id: str | None) -> Recovery:
    """`messages`: (channel, message as conversations.history gives it, metadata included). Only this
    bot's messages count: another app could post metadata of the same event type."""
    deliveries: list[RecoveredDelivery] = []
    newest: datetime | None = None
    for channel, message in messages:
        if bot_id and message.get("bot_id") not in (None, bot_id):
            continue
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") == ALERT_EVENT_TYPE:
            entries = [payload]
        elif metadata.get("event_type") == GROUP_EVENT_TYPE:
            entries = [entry for entry in payload.get("items", []) if isinstance(entry, Mapping)]
        else:
            continue
        try:
            at = datetime.fromtimestamp(float(message.get("ts", "")), UTC)
        except ValueError:
            continue
        for entry in entries:
            feed_id, key, link = (str(entry.get(name) or "") for name in ("feed_id", "item_key", "link"))
            if not key:
                continue
            item = Item(feed_id=feed_id, key=key, link=link, title="")
            deliveries.append(RecoveredDelivery(channel, delivery_key(item), link, at))
            newest = at if newest is None or at > newest else newest
    return Recovery(tuple(deliveries), newest)
