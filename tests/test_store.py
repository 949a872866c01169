"""The same contract for every store backend: memory (tests) and TinyDB files (production)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.errors import StateError, StateLockedError
from bot.health import FeedHealth
from bot.model import AddedFeed, ChannelMatch, Item, Subscription
from bot.storage import JournaledTinyDB, TinyDBBackend, open_store, outbox_path
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
    return _restarts(tmp_path / "state.json")


def _restarts(path: Path) -> Callable[[], Store]:
    """Opens the store on `path`, first closing the one opened before, as a process that ended would
    have let go of its lock."""
    opened: list[Store] = []

    def reopen() -> Store:
        if opened:
            opened.pop().close()
        opened.append(open_store(path))
        return opened[-1]

    return reopen


def test_a_feed_is_unknown_until_its_first_cycle_is_committed(reopen) -> None:
    store = reopen()
    assert store.feed_state("f") is None
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"], etag='"1"', body_hash="h"))
    state = reopen().feed_state("f")
    assert state is not None and state.etag == '"1"' and state.body_hash == "h" and state.first_polled == T0


def test_a_feeds_health_survives_a_restart_and_a_failing_first_poll_stays_a_first_poll(reopen) -> None:
    failing = FeedHealth(failures=3, failing_since=T0, last_failure=T0 + timedelta(minutes=8), last_error="x")
    reopen().record_feed_health("f", failing)
    store = reopen()
    assert store.feed_health("f") == failing
    assert store.feed_state("f") is None  # it has never been read: its first good poll is the backfill
    store.commit_cycle(CycleChange("f", T0 + timedelta(hours=1), keys_in_feed=["a"]))
    store.record_feed_health("f", FeedHealth())
    store = reopen()
    assert store.feed_health("f") == FeedHealth() and store.feed_health("unknown") == FeedHealth()
    state = store.feed_state("f")
    assert state is not None and state.first_polled == T0 + timedelta(hours=1)


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


def test_a_cycle_appends_one_journal_line_and_leaves_the_main_file_alone(tmp_path: Path, monkeypatch) -> None:
    store = open_store(tmp_path / "state.json")
    replaced: list[str] = []
    import os

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(Path(b).name), real_replace(a, b)))
    for n in range(3):
        store.record_delivery("C1", item(f"k{n}"), T0)
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=[f"k{n}" for n in range(100)]))

    assert "state.json" not in replaced  # small changes go to the journal, not a rewrite
    assert replaced.count("state.outbox.json") == 4  # one per delivery, then emptied after the commit
    [line] = (tmp_path / "state.journal.jsonl").read_text().splitlines()
    assert set(json.loads(line)) == {"feeds", "seen", "delivered"}
    assert json.loads(outbox_path(tmp_path / "state.json").read_text()) == {"_default": {}}
    store.close()
    assert open_store(tmp_path / "state.json").seen_count("f") == 100


def test_a_cycle_writes_what_it_changes_whatever_is_stored(tmp_path: Path) -> None:
    store = open_store(tmp_path / "state.json")
    keys = [f"old-{n}" for n in range(20_000)]
    store.commit_cycle(CycleChange("big", T0, keys_in_feed=keys))
    for n in range(50):  # each is fsynced to the outbox: a few, not thousands
        store.record_delivery("C1", item(f"old-{n}"), T0)
    # The hourly sweep; every key is still in the feed, so none is stale.
    store.commit_cycle(CycleChange("big", T0 + timedelta(hours=2), keys_in_feed=keys))
    journal = tmp_path / "state.journal.jsonl"
    before = journal.stat().st_size if journal.exists() else 0

    store.commit_cycle(CycleChange("f", T0 + timedelta(hours=2, minutes=5), keys_in_feed=["new-1", "new-2"]))

    assert journal.stat().st_size - before < 600  # two keys and the feed's headers: not 20,000 keys
    store.close()
    assert open_store(tmp_path / "state.json").seen_count("big") == 20_000


def test_the_journal_is_folded_into_the_main_file_once_it_outgrows_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(JournaledTinyDB, "MIN_COMPACT_BYTES", 2_000)
    store = open_store(tmp_path / "state.json")
    for n in range(60):
        store.commit_cycle(CycleChange("f", T0 + timedelta(minutes=n), keys_in_feed=[f"k{n}"]))
    main = json.loads((tmp_path / "state.json").read_text())
    assert len(main["seen"]) > 40  # rewritten whole at least once, with most keys
    assert (tmp_path / "state.journal.jsonl").stat().st_size < 2_000 + len(json.dumps(main))
    store.close()
    assert open_store(tmp_path / "state.json").seen_count("f") == 60


def test_a_journal_line_cut_short_by_a_crash_is_ignored(tmp_path: Path, caplog) -> None:
    store = open_store(tmp_path / "state.json")
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"]))
    with open(tmp_path / "state.journal.jsonl", "a") as journal:
        journal.write('{"seen":{"9":{"feed_id":"f","key":"b","a')  # the crash came mid-append
    store.close()
    reopened = open_store(tmp_path / "state.json")
    assert [i.key for i in reopened.unseen("f", [item("a"), item("b")])] == ["b"]
    assert "incomplete last line" in caplog.text
    reopened.commit_cycle(CycleChange("f", T0 + timedelta(minutes=5), keys_in_feed=["a", "c"]))
    reopened.close()
    assert open_store(tmp_path / "state.json").seen_count("f") == 2  # appends after it read back fine


def test_a_damaged_journal_is_set_aside_with_its_file_and_the_bot_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(tmp_path / "state.json")
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"]))
    store.close()
    journal = tmp_path / "state.journal.jsonl"
    journal.write_text("not json\n" + journal.read_text())
    reopened = open_store(tmp_path / "state.json")
    assert reopened.feed_state("f") is None  # a first poll again: backfill rules, no flood
    assert "state.journal.jsonl line 1 is damaged" in caplog.text
    assert "moved aside" in caplog.text and "first poll" in caplog.text
    moved = sorted(p.name for p in tmp_path.glob("*.damaged-*"))
    assert [name.split(".damaged-")[0] for name in moved] == ["state.journal.jsonl", "state.json"]
    assert "not json" in next(tmp_path.glob("state.journal.jsonl.damaged-*")).read_text()
    reopened.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"]))
    reopened.close()
    assert open_store(tmp_path / "state.json").feed_state("f") is not None  # the fresh files work


def test_state_from_before_per_key_documents_is_moved_over(tmp_path: Path) -> None:
    legacy = {
        "feeds": {"1": {"feed_id": "f", "first_polled": T0.isoformat(), "seen": {"a": T0.isoformat()}}},
        "channels": {
            "1": {
                "channel": "C1",
                "delivered": {"https://example.com/a": T0.isoformat()},
                "links": {"https://example.com/x": T0.isoformat()},
            }
        },
    }
    (tmp_path / "state.json").write_text(json.dumps(legacy))
    open_store(tmp_path / "state.json").close()
    store = open_store(tmp_path / "state.json")
    assert [i.key for i in store.unseen("f", [item("a"), item("b")])] == ["b"]
    assert store.is_delivered("C1", item("https://example.com/a"))
    assert store.is_delivered("C1", item("other", link="https://example.com/x"))
    assert store.feed_state("f") is not None


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="truncated"),
        pytest.param(lambda text: "\0" * len(text), id="zeroed"),
        pytest.param(lambda text: "[1, 2]", id="not-tinydb"),
    ],
)
def test_a_damaged_state_file_is_set_aside_and_never_read_as_empty_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[str], str]
) -> None:
    path = tmp_path / "state.json"
    store = open_store(path)
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a"]))
    store._backend._main._compact()  # type: ignore[attr-defined]  # everything in the file itself
    store.close()
    original = path.read_text()
    path.write_text(damage(original))
    reopened = Store(TinyDBBackend(path))
    assert reopened.feed_state("f") is None
    [record] = [r for r in caplog.records if "moved aside" in r.getMessage()]
    assert record.levelname == "ERROR" and "state.json is damaged" in record.getMessage()
    [moved] = tmp_path.glob("state.json.damaged-*")
    assert moved.read_text() == damage(original)  # kept for a person to look at


def test_a_preview_never_moves_damaged_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"feeds": {"1": {"feed_id": "f", "se')
    with pytest.raises(StateError, match=r"state\.json is damaged"):
        TinyDBBackend(path, owner=False)
    assert path.exists() and not list(tmp_path.glob("*.damaged-*"))


def test_a_second_bot_on_the_same_state_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    first = open_store(tmp_path / "state.json")
    with pytest.raises(StateLockedError, match=rf"in use by another feedwatch process \(pid {os.getpid()}"):
        open_store(tmp_path / "state.json")
    TinyDBBackend(tmp_path / "state.json", owner=False).load()  # a preview still reads it
    first.close()
    open_store(tmp_path / "state.json").close()


def test_the_lock_goes_with_a_killed_process(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from bot.storage import open_store; "
        f"store = open_store(Path({str(tmp_path / 'state.json')!r})); "
        "print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(StateLockedError, match=f"pid {holder.pid}"):
            open_store(tmp_path / "state.json")
    finally:
        holder.kill()
        holder.wait()
    open_store(tmp_path / "state.json").close()  # SIGKILL left no stale lock


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
    main_files = [tmp_path / "state.json", tmp_path / "state.journal.jsonl"]
    assert not any("Title a" in path.read_text() for path in main_files if path.exists())
    [line] = (tmp_path / "state.archive.journal.jsonl").read_text().splitlines()
    assert [doc["item"]["title"] for doc in json.loads(line)["items"].values()] == ["Title a"]


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


def test_feeds_added_from_slack_are_written_at_once(reopen) -> None:
    store = reopen()
    feed = AddedFeed("hn", "https://hnrss.org/frontpage", "U1", T0, title="Hacker News")
    assert store.add_feed(feed)
    assert not store.add_feed(AddedFeed("hn", "https://other.example/feed", "U2", T0))  # ids are unique
    assert store.add_feed(AddedFeed("lwn", "https://lwn.net/headlines/rss", "U2", T0 + timedelta(hours=1)))
    after = reopen()
    assert [f.id for f in after.added_feeds()] == ["hn", "lwn"]  # oldest first
    assert after.added_feeds()[0] == feed
    assert after.remove_feed("hn") and not after.remove_feed("hn")
    assert [f.id for f in reopen().added_feeds()] == ["lwn"]


def test_a_forgotten_feed_starts_again_with_a_first_poll(reopen) -> None:
    store = reopen()
    store.commit_cycle(CycleChange("f", T0, keys_in_feed=["a", "b"], items=[item("a")]))
    store.commit_cycle(CycleChange("g", T0, keys_in_feed=["a"]))
    store.forget_feed("f")
    after = reopen()
    assert after.feed_state("f") is None and after.seen_count("f") == 0
    assert after.feed_state("g") is not None and after.seen_count("g") == 1  # other feeds keep theirs
    assert [entry.item.key for entry in after.archived()] == ["a"]  # still searchable until retention


def test_a_poll_of_a_feed_removed_from_slack_meanwhile_writes_nothing_back(reopen) -> None:
    store = reopen()
    store.add_feed(AddedFeed("hn", "https://hnrss.org/frontpage", "U1", T0))
    store.commit_cycle(CycleChange("hn", T0, keys_in_feed=["a"], added_feed=True))
    # remove-feed, while a poll of it is still running
    store.remove_feed("hn")
    store.forget_feed("hn")
    store.commit_cycle(CycleChange("hn", T0 + timedelta(minutes=5), keys_in_feed=["a", "b"], added_feed=True))
    after = reopen()
    assert after.feed_state("hn") is None and after.seen_count("hn") == 0  # added again: a first poll
