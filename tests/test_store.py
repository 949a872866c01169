"""The same contract for every store backend: memory (tests) and TinyDB files (production)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.errors import StateError
from bot.model import ChannelMatch, Item, Subscription
from bot.storage import TinyDBBackend, open_store, outbox_path
from bot.store import CycleChange, MemoryBackend, PendingAlert, Store, pending_id

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def item(key: str, link: str = "") -> Item:
    return Item(feed_id="f", key=key, link=link or f"https://example.com/{key}", title=f"Title {key}")


@pytest.fixture(params=["memory", "tinydb"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens the store afresh on the same durable state each call: a restart."""
    if request.param == "memory":
        backend = MemoryBackend()
        return lambda: Store.in_memory(backend)
    return lambda: open_store(tmp_path / "state.json")


def test_a_feed_is_unknown_until_its_first_cycle_is_committed(reopen) -> None:
    store = reopen()
    assert store.feed_state("f") is None
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"], etag='"1"', body_hash="h"))
    state = reopen().feed_state("f")
    assert state is not None and state.etag == '"1"' and state.body_hash == "h" and state.first_polled == T0


def test_seen_keys_survive_a_restart(reopen) -> None:
    store = reopen()
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a", "b"]))
    assert [i.key for i in reopen().unseen("f", [item("a"), item("b"), item("c")])] == ["c"]


def test_keys_gone_from_the_feed_are_pruned_after_30_days_but_present_ones_never(reopen) -> None:
    store = reopen()
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["old", "stays"]))
    store.commit_cycle(CycleChange("f", T0 + timedelta(days=29), keys_in_feed=["stays"]))
    assert store.seen_count("f") == 2
    store.commit_cycle(CycleChange("f", T0 + timedelta(days=31), keys_in_feed=["stays"]))
    assert [i.key for i in reopen().unseen("f", [item("old"), item("stays")])] == ["old"]


def test_a_delivery_is_durable_before_the_cycle_is_committed(reopen) -> None:
    store = reopen()
    store.record_delivery("C1", item("a"), T0)
    # No commit: the process dies here.
    after_crash = reopen()
    assert after_crash.is_delivered("C1", item("a"))
    assert not after_crash.is_delivered("C2", item("a"))


def test_delivered_matches_by_key_or_by_canonical_link(reopen) -> None:
    store = reopen()
    store.record_delivery("C1", item("a", "https://example.com/story"), T0)
    assert store.is_delivered("C1", item("other-guid", "https://example.com/story"))
    assert not store.is_delivered("C1", item("b"))


def test_pending_alerts_survive_a_restart_and_go_when_delivered(reopen) -> None:
    store = reopen()
    match = ChannelMatch("C1", item("a"), ("Nexperia",))
    alert = PendingAlert(
        pending_id("C1", item("a")), match, "SCMP", T0, attempts=1, next_attempt=T0, last_error="x"
    )
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"], new_pending=[alert]))

    restarted = reopen()
    [loaded] = restarted.pending()
    assert loaded.match == match and loaded.source == "SCMP" and loaded.last_error == "x"
    restarted.record_delivery("C1", item("a"), T0)
    restarted.commit()
    assert reopen().pending() == []


def test_tinydb_writes_the_main_file_once_per_cycle_and_atomically(tmp_path: Path, monkeypatch) -> None:
    store = open_store(tmp_path / "state.json")
    replaced: list[str] = []
    import os

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b).name), real_replace(a, b)))
    for n in range(3):
        store.record_delivery("C1", item(f"k{n}"), T0)
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=[f"k{n}" for n in range(100)]))

    assert replaced.count("state.json") == 1
    assert replaced.count("state.outbox.json") == 4  # one per delivery, then emptied after the commit
    data = json.loads((tmp_path / "state.json").read_text())
    assert set(data) == {"feeds", "channels"}
    assert json.loads(outbox_path(tmp_path / "state.json").read_text()) == {"_default": {}}


def test_a_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"feeds": {"1": {"feed_id": "f", "se')
    with pytest.raises(StateError, match=r"state\.json is damaged"):
        Store(TinyDBBackend(path))


def test_non_url_guids_of_two_feeds_are_two_items_but_url_guids_are_one(reopen) -> None:
    store = reopen()
    store.record_delivery("C1", Item(feed_id="a", key="1001", link="", title="One"), T0)
    assert not store.is_delivered("C1", Item(feed_id="b", key="1001", link="", title="Other"))
    assert store.is_delivered("C1", Item(feed_id="a", key="1001", link="", title="One"))
    store.record_delivery("C1", item("https://e.com/x"), T0)
    assert store.is_delivered("C1", Item(feed_id="other", key="https://e.com/x", link="", title="Same"))


def test_an_unreadable_state_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="cannot read state file"):
        open_store(tmp_path).pending()  # a folder where the file should be


def test_deliveries_are_forgotten_after_90_days(reopen) -> None:
    store = reopen()
    store.record_delivery("C1", item("a"), T0)
    store.commit_cycle(CycleChange("f", T0 + timedelta(days=89)))
    assert reopen().is_delivered("C1", item("a"))
    store.commit_cycle(CycleChange("f", T0 + timedelta(days=91)))
    assert not reopen().is_delivered("C1", item("a"))


def test_an_uncertain_post_is_durable_at_once_and_cleared_by_its_delivery(reopen) -> None:
    store = reopen()
    store.record_uncertain("C1", item("a"), T0)
    store.record_uncertain("C1", item("a"), T0 + timedelta(minutes=5))  # the first time is kept
    after_crash = reopen()
    assert after_crash.uncertain_since("C1", item("a")) == T0
    after_crash.record_delivery("C1", item("a"), T0 + timedelta(minutes=6))
    after_crash.commit()
    assert reopen().uncertain_since("C1", item("a")) is None


def test_an_uncertain_post_is_found_by_its_link_from_another_feed(reopen) -> None:
    store = reopen()
    store.record_uncertain("C1", item("a-1", link="https://example.com/story"), T0)
    other_feed_copy = Item(feed_id="g", key="b-9", link="https://example.com/story", title="Same story")
    after_crash = reopen()
    assert after_crash.uncertain_since("C1", other_feed_copy) == T0
    assert after_crash.uncertain_since("C2", other_feed_copy) is None  # another channel never had it
    after_crash.record_delivery("C1", other_feed_copy, T0 + timedelta(minutes=1))
    after_crash.commit()
    assert reopen().uncertain_since("C1", item("a-1", link="https://example.com/story")) is None


def test_a_refused_post_clears_its_marker(reopen) -> None:
    store = reopen()
    store.record_uncertain("C1", item("a"), T0)
    store.clear_uncertain("C1", item("a"))
    assert store.uncertain_since("C1", item("a")) is None
    store.commit()
    assert reopen().uncertain_since("C1", item("a")) is None


def test_every_polled_item_is_archived_until_its_retention_ends(reopen) -> None:
    store = reopen()
    old = Item(
        feed_id="f", key="a", link="https://example.com/a", title="A", published=T0 - timedelta(days=3)
    )
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a", "b"], items=[old, item("b")]))
    store.commit_cycle(CycleChange("f", T0 + timedelta(days=10), keys_in_feed=["c"], items=[item("c")]))
    later = reopen()
    assert [entry.item.key for entry in later.archived()] == ["c", "b", "a"]  # newest first
    assert [entry.item.key for entry in later.archived(since=T0 - timedelta(days=1))] == ["c", "b"]
    assert later.prune_archive(T0 + timedelta(days=35), retention=timedelta(days=30)) == 2
    assert [entry.item.key for entry in reopen().archived()] == ["c"]


def test_the_archive_lives_in_its_own_file(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.json")
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"], items=[item("a")]))
    store.close()
    assert "archive" not in json.loads((tmp_path / "state.json").read_text()).get("items", {})
    archive = json.loads((tmp_path / "state.archive.json").read_text())
    assert [doc["item"]["title"] for doc in archive["items"].values()] == ["Title a"]


def test_subscriptions_and_pauses_are_written_at_once(reopen) -> None:
    store = reopen()
    sub = Subscription("C1", "Huawei", None, "U1", T0)
    assert store.add_subscriptions([sub, Subscription("C1", "huawei", None, "U2", T0)]) == [sub]  # same term
    store.pause("C1", T0 + timedelta(hours=2), "U1")
    after = reopen()
    assert after.subscriptions("C1") == [sub]
    pause = after.pause_of("C1", T0)
    assert pause is not None and pause.until == T0 + timedelta(hours=2)
    assert after.pause_of("C1", T0 + timedelta(hours=3)) is None  # over
    after.remove_subscriptions([sub])
    assert reopen().subscriptions() == []
