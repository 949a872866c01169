"""Poll cycles through the real bot (build_app, HTTP on loopback, TinyDB files in a temporary folder),
against a feed host in another process (bench.feed_server) so that only the bot's CPU is counted:

- one cycle of an unchanged feed, when the server answers 304 and when it sends the same bytes again;
- one cycle of a changed feed (3 new items) with 100 vs 100,000 keys already stored;
- 500 unchanged feeds polled in one cycle, one at a time and `poll_concurrency` at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bot.parse
from bench.feed_server import BODY, ETAG
from bot.app import App, build_app
from bot.config import environment_from
from bot.storage import TinyDBBackend, open_store
from bot.store import CycleChange, delivery_key

REPO = Path(__file__).resolve().parent.parent
CHANNELS = """channels:
  - channel: C0NEXPERIA
    keywords: [Nexperia, Wingtech]
  - channel: C0POLICY
    query: '("export control*" OR sanction*) AND (chip* OR semiconductor*) NOT opinion'
"""


@contextlib.contextmanager
def feed_server() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.feed_server"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{int(process.stdout.readline())}"
    finally:
        process.kill()
        process.wait()


class CountingParser:
    """Counts feedparser calls: an unchanged feed must never reach it."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = bot.parse.feedparser.parse

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._real(*args, **kwargs)

    def __enter__(self) -> CountingParser:
        bot.parse.feedparser.parse = self
        return self

    def __exit__(self, *exc: object) -> None:
        bot.parse.feedparser.parse = self._real


def make_app(folder: Path, feeds: list[tuple[str, str]], *, concurrency: int = 8) -> App:
    listed = "".join(f"  - id: {feed_id}\n    url: {url}\n" for feed_id, url in feeds)
    rules = folder / "rules.yaml"
    rules.write_text(f"settings:\n  poll_concurrency: {concurrency}\nfeeds:\n{listed}{CHANNELS}")
    env = environment_from({"BOT_RULES": str(rules), "BOT_DB": str(folder / "state.json")}, folder)
    return build_app(env, stdout=io.StringIO())


def seed_as_polled(db: Path, feed_ids: list[str], keys_per_feed: list[str]) -> None:
    """State as after an earlier poll of each feed: its keys seen, and the server's ETag and body hash."""
    store = open_store(db)
    polled = datetime.now(UTC) - timedelta(minutes=5)
    for feed_id in feed_ids:
        store.commit_cycle(
            CycleChange(
                feed_id,
                polled,
                keys_in_feed=keys_per_feed,
                etag=ETAG,
                body_hash=hashlib.sha256(BODY).hexdigest(),
            )
        )
    store.close()


SAMPLE_KEYS = [item.key for item in bot.parse.parse_feed(BODY, "x").items]


def timed_cycles(app: App, cycles: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of each cycle."""
    walls, cpus = [], []
    for _ in range(cycles):
        wall, cpu = time.perf_counter(), time.process_time()
        reports = app.poll_all_once()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        failed = [r for r in reports if r.status == "error"]
        assert not failed, failed[0].error
    return walls, cpus


def unchanged_feed(url: str, cycles: int) -> None:
    print("## One cycle of an unchanged feed (the 83 KB SCMP feed; the bot's CPU only)")
    print()
    print("| server | status | CPU ms/cycle | wall ms/cycle | feedparser calls |")
    print("| --- | --- | ---: | ---: | ---: |")
    for kind, label in (("etag", "answers 304"), ("same", "sends the same bytes again")):
        with tempfile.TemporaryDirectory() as folder:
            seed_as_polled(Path(folder) / "state.json", ["scmp"], SAMPLE_KEYS)
            app = make_app(Path(folder), [("scmp", f"{url}/{kind}/0")])
            timed_cycles(app, 3)  # connections and caches warm
            with CountingParser() as parser:
                walls, cpus = timed_cycles(app, cycles)
            status = app.status()["feeds"]["scmp"]["last_status"]
            app.close()
        print(
            f"| {label} | {status} | {statistics.median(cpus) * 1e3:.2f} "
            f"| {statistics.median(walls) * 1e3:.2f} | {parser.calls} |"
        )
    with tempfile.TemporaryDirectory() as folder:
        seed_as_polled(Path(folder) / "state.json", ["scmp"], SAMPLE_KEYS)
        app = make_app(Path(folder), [("scmp", f"{url}/changing/0")])
        with CountingParser() as parser:
            walls, cpus = timed_cycles(app, 5)
        app.close()
    print(
        f"| for scale: a changed feed | ok | {statistics.median(cpus) * 1e3:.2f} "
        f"| {statistics.median(walls) * 1e3:.2f} | {parser.calls} |"
    )
    print()


def changed_feed_by_stored_keys(url: str, cycles: int, sizes: tuple[int, ...]) -> None:
    print(f"## One cycle of a changed feed (3 new items) by keys already stored (median of {cycles})")
    print()
    print("| keys stored | wall ms/cycle | CPU ms/cycle | vs the smallest | state file rewrites |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with contextlib.ExitStack() as stack:
        apps = []
        for index, stored in enumerate(sizes):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            apps.append(_app_with_stored_keys(folder, stored, f"{url}/changing/{index}"))
            stack.callback(apps[-1].close)
        for app in apps:
            timed_cycles(app, 2)
        rewrites = [_rewrites(app) for app in apps]
        walls: list[list[float]] = [[] for _ in apps]
        cpus: list[list[float]] = [[] for _ in apps]
        for _ in range(cycles):  # in turn, so that the machine's slow spells fall on every size alike
            for index, app in enumerate(apps):
                wall, cpu = timed_cycles(app, 1)
                walls[index] += wall
                cpus[index] += cpu
        rewrites = [_rewrites(app) - before for app, before in zip(apps, rewrites, strict=True)]
    baseline = statistics.median(walls[0])
    for stored, wall_times, cpu_times, rewritten in zip(sizes, walls, cpus, rewrites, strict=True):
        wall = statistics.median(wall_times)
        print(
            f"| {stored:,} | {wall * 1e3:.1f} | {statistics.median(cpu_times) * 1e3:.1f} "
            f"| {wall / baseline:.2f}x | {rewritten} |"
        )
    print()


def _rewrites(app: App) -> int:
    backend = app.store.backend
    assert isinstance(backend, TinyDBBackend)
    return backend.rewrites


def _app_with_stored_keys(folder: Path, stored: int, feed_url: str) -> App:
    """A bot whose state holds `stored` seen keys of 100 other feeds and one delivery per ten keys (what
    a busy bot holds), and the SCMP feed polled before."""
    db = folder / "state.json"
    store = open_store(db)
    earlier = datetime.now(UTC) - timedelta(days=1)
    per_feed = max(1, stored // 100)
    for feed in range(max(1, stored // per_feed)):
        keys = [f"https://example.com/{feed}/{n}" for n in range(per_feed)]
        store.commit_cycle(CycleChange(f"other-{feed}", earlier, keys_in_feed=keys))
    store.close()
    _deliveries(db, stored // 10)
    seed_as_polled(db, ["scmp"], SAMPLE_KEYS)
    app = make_app(folder, [("scmp", feed_url)])
    assert app.store.seen_count("scmp") == 50
    return app


def _deliveries(db: Path, count: int) -> None:
    """Deliveries written straight as documents (the outbox fsyncs each one: too slow to seed with)."""
    from bot.model import Item

    store = open_store(db)
    at = datetime.now(UTC) - timedelta(days=1)
    for n in range(count):
        item = Item(feed_id="other-0", key=f"https://example.com/0/{n}", link="", title="")
        store._remember_delivery(f"C{n % 50:04d}", delivery_key(item), "", at.isoformat())  # type: ignore[attr-defined]
    store.commit()
    store.close()


def many_unchanged_feeds(url: str, count: int) -> None:
    print(f"## {count} unchanged feeds (all answering 304) polled in one cycle")
    print()
    print("| feed host | fetches at once | wall s | CPU s | wall vs one at a time |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, label, cycles in (("etag", "loopback", 2), ("distant", "50 ms away", 1)):
        baseline = None
        for concurrency in (1, 8, 32):
            with tempfile.TemporaryDirectory() as folder:
                feeds = [(f"feed-{n}", f"{url}/{kind}/{n}") for n in range(count)]
                seed_as_polled(
                    Path(folder) / "state.json", [feed_id for feed_id, _ in feeds], SAMPLE_KEYS[:5]
                )
                app = make_app(Path(folder), feeds, concurrency=concurrency)
                with CountingParser() as parser:
                    walls, cpus = timed_cycles(app, cycles)
                assert parser.calls == 0
                app.close()
            wall, cpu = min(walls), min(cpus)
            baseline = baseline or wall
            print(f"| {label} | {concurrency} | {wall:.2f} | {cpu:.2f} | {baseline / wall:.1f}x |")
    print()


def run(*, quick: bool = False) -> None:
    with feed_server() as url:
        unchanged_feed(url, cycles=10 if quick else 30)
        changed_feed_by_stored_keys(url, cycles=5 if quick else 15, sizes=(100, 10_000 if quick else 100_000))
        many_unchanged_feeds(url, 50 if quick else 500)
