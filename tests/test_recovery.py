"""Rebuilding what was delivered from the bot's own messages (bot.recovery), without Slack."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.recovery import recover_deliveries
from bot.store import RecoveredDelivery


def alert(ts: str, key: str, *, feed: str = "scmp", link: str = "", bot_id: str = "BBOT") -> dict:
    payload = {"feed_id": feed, "item_key": key, "link": link}
    return {"ts": ts, "bot_id": bot_id, "metadata": {"event_type": "feed_alert", "event_payload": payload}}


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def test_alerts_and_grouped_messages_of_this_bot_count_as_delivered_and_give_the_newest_time() -> None:
    group = {
        "ts": "300.5",
        "bot_id": "BBOT",
        "metadata": {
            "event_type": "feed_alert_group",
            "event_payload": {
                "items": [{"feed_id": "scmp", "item_key": "https://e.com/b", "link": "https://e.com/b"}]
            },
        },
    }
    recovery = recover_deliveries(
        [
            ("C1", alert("100.0", "1001")),
            ("C2", group),
            ("C1", {"ts": "400.0", "text": "a person's message"}),
        ],
        bot_id="BBOT",
    )
    assert recovery.deliveries == (
        RecoveredDelivery("C1", "scmp\x1f1001", "", at(100.0)),  # a feed-local key stays within its feed
        RecoveredDelivery("C2", "https://e.com/b", "https://e.com/b", at(300.5)),
    )
    assert recovery.newest_alert == at(300.5)  # a person's later message says nothing of the bot


def test_another_apps_look_alike_metadata_and_broken_entries_are_ignored() -> None:
    recovery = recover_deliveries(
        [
            ("C1", alert("500.0", "x", bot_id="BOTHER")),
            ("C1", alert("not a ts", "y")),
            ("C1", alert("200.0", "")),
            ("C1", {"ts": "600.0", "bot_id": "BBOT", "metadata": {"event_type": "something_else"}}),
        ],
        bot_id="BBOT",
    )
    assert recovery.deliveries == () and recovery.newest_alert is None
