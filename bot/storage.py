"""TinyDB files for the store: the main state and the archive, each a TinyDB file plus a journal of the
changes since it was last written whole (one append per cycle), and a small outbox file beside them that
records each delivery the moment Slack accepts it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from tinydb import TinyDB

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
from tinydb.storages import Storage

from bot.errors import DamagedStateError, StateError, StateLockedError
from bot.store import TABLES, Changes, Store

log = logging.getLogger(__name__)

# Every state file holds feed URLs (tokens in their queries) and people's watch terms: owner only, whatever
# the umask. mkstemp already creates 0600; the journals and the lock file go through open_private.
PRIVATE_MODE = 0o600


def open_private(path: Path, flags: int) -> int:
    """A file descriptor on `path`, created 0600 if missing, and tightened to 0600 if an earlier version
    left it readable by others."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_MODE)
    if hasattr(os, "fchmod"):  # not on Windows, where modes mean little
        os.fchmod(fd, PRIVATE_MODE)
    return fd


def tighten(path: Path) -> None:
    """A state file an earlier version created 0644 becomes 0600 (missing: nothing to do)."""
    try:
        if path.stat().st_mode & 0o777 != PRIVATE_MODE:
            path.chmod(PRIVATE_MODE)
    except FileNotFoundError:
        pass


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the file in one step: JSONStorage rewrites in place, and a crash in the
    middle of that write leaves a truncated, unreadable file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as e:
            raise DamagedStateError(f"state file {self.path} is damaged (not UTF-8: {e.reason})") from e
        except OSError as e:
            raise StateError(f"cannot read state file {self.path}: {e.strerror or e}") from e
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DamagedStateError(f"state file {self.path} is damaged ({e})") from e
        if not isinstance(data, dict) or not all(isinstance(table, dict) for table in data.values()):
            raise DamagedStateError(f"state file {self.path} is damaged (not a TinyDB file)")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self.write_text(json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).iterencode(data))

    def write_text(self, chunks: Iterable[str]) -> None:
        """The file's new text, already JSON, in one atomic step."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.writelines(chunks)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        pass


def outbox_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.stem + ".outbox" + db_path.suffix)


def archive_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.stem + ".archive" + db_path.suffix)


class JournaledTinyDB:
    """A TinyDB file that is not rewritten whole for every change: each write appends its changed
    documents as one line to a journal file beside it (`<name>.journal.jsonl`), and the TinyDB file is
    rewritten, with the journal emptied, only once the journal has grown as large as the file. A write
    therefore costs what it changes, not what is stored (amortised: each rewrite follows as many bytes
    of changes), which is what keeps a cycle fast at 100,000 stored keys.

    TinyDB's own table updates rebuild a whole table for each one, so documents are kept here in
    TinyDB's file layout ({table: {doc id: doc}}), each as its JSON text: compact in memory, written as
    is, and a copy that later changes to the caller's dicts cannot alter. The file is read and written
    through TinyDB's storage interface. A crash leaves at worst a last, incomplete journal line, which
    was never acknowledged and is ignored; replaying lines the rewritten file already holds changes
    nothing.
    """

    MIN_COMPACT_BYTES = 1 << 20  # below this a journal is not worth a rewrite

    def __init__(self, path: Path, *, owner: bool = True) -> None:
        """`owner`: this process runs the bot on these files, and may set damaged ones aside and tidy the
        journal; otherwise (a preview's snapshot) they are only read."""
        self.path = path
        self.journal_path = path.with_name(path.stem + ".journal.jsonl")
        self._storage = AtomicJSONStorage(str(path))
        self._journal_bytes = 0
        self.rewrites = 0  # for tests and the benchmark
        # Where a damaged file and its journal were moved, when they were (None: read as they were).
        self.set_aside: Path | None = None
        try:
            self._texts: dict[str, dict[str, str]] = {
                table: {doc_id: _json(doc) for doc_id, doc in docs.items()}
                for table, docs in (self._storage.read() or {}).items()
            }
            unfinished = self._replay_journal()
        except DamagedStateError as e:
            if not owner:
                raise
            self.set_aside = set_aside(e, path, self.journal_path)
            self._texts, self._journal_bytes, unfinished = {}, 0, False
        if not owner:
            return
        if not path.exists():
            try:
                self._storage.write({})  # the file is there from the start, and the folder is writable
            except OSError as e:
                raise StateError(f"cannot write state file {path}: {e.strerror or e}") from e
        self._file_bytes = path.stat().st_size
        if unfinished:
            self._compact()  # leaves a clean journal to append to

    def documents(self, table: str) -> dict[str, dict[str, Any]]:
        """A table's documents by doc id, as fresh dicts."""
        return {doc_id: json.loads(text) for doc_id, text in self._texts.get(table, {}).items()}

    def _replay_journal(self) -> bool:
        """Applies the journal's lines; True when its last line was cut short (and ignored)."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StateError(f"cannot read journal {self.journal_path}: {e.strerror or e}") from e
        complete, _, unfinished = data.rpartition(b"\n")
        if unfinished:
            log.warning("%s: ignoring an incomplete last line (a write cut short)", self.journal_path)
        for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
            try:
                self._apply(json.loads(line))
            except (ValueError, AttributeError, TypeError) as e:
                raise DamagedStateError(f"journal {self.journal_path} line {number} is damaged ({e})") from e
        self._journal_bytes = len(complete) + (1 if complete else 0)
        return bool(unfinished)

    def _apply(self, changes: Changes) -> dict[str, dict[str, str | None]]:
        """Applies the changes; returns them as JSON texts (None: removed)."""
        applied: dict[str, dict[str, str | None]] = {}
        for table_name, docs in changes.items():
            table = self._texts.setdefault(table_name, {})
            texts = applied[table_name] = {}
            for doc_id, doc in docs.items():
                if doc is None:
                    table.pop(doc_id, None)
                    texts[doc_id] = None
                else:
                    texts[doc_id] = table[doc_id] = _json(doc)
        return applied

    def write(self, changes: Changes) -> None:
        if not changes:
            return
        applied = self._apply(changes)
        line = _layout(applied).encode("utf-8") + b"\n"
        if self._journal_bytes + len(line) > max(self._file_bytes, self.MIN_COMPACT_BYTES):
            self._compact()
            return
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_private(self.journal_path, os.O_WRONLY | os.O_APPEND), "ab") as journal:
            journal.write(line)
            journal.flush()
            os.fsync(journal.fileno())
        self._journal_bytes += len(line)

    def _compact(self) -> None:
        # Atomic: a crash before the rename keeps the old file and the whole journal.
        self._storage.write_text(_layout_chunks(self._texts))
        self._file_bytes = self.path.stat().st_size
        with os.fdopen(open_private(self.journal_path, os.O_WRONLY | os.O_TRUNC), "wb") as journal:
            os.fsync(journal.fileno())
        self._journal_bytes = 0
        self.rewrites += 1


def set_aside(error: DamagedStateError, *paths: Path) -> Path:
    """Moves damaged state files out of the way, so the bot starts afresh instead of not at all, and says
    so loudly: the next poll of each feed is a first poll (its items are taken as seen, only the newest
    few posted per the backfill rule), so nothing floods, but alerts of the gap may be missed."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for path in paths:
        if path.exists():
            target = path.with_name(f"{path.name}.damaged-{stamp}")
            path.replace(target)
            moved.append(target)
    log.error(
        "%s: moved aside to %s; starting afresh, each feed's next poll is a first poll",
        error,
        ", ".join(str(target) for target in moved),
    )
    return moved[0]


def _json(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _layout_chunks(tables: Mapping[str, Mapping[str, str | None]]) -> Iterator[str]:
    """TinyDB's file layout, {table: {doc id: doc}}, from documents already in JSON (None: null)."""
    yield "{"
    for table_number, (table, docs) in enumerate(tables.items()):
        yield ("," if table_number else "") + _json(table) + ":{"
        for doc_number, (doc_id, text) in enumerate(docs.items()):
            yield ("," if doc_number else "") + _json(doc_id) + ":" + ("null" if text is None else text)
        yield "}"
    yield "}"


def _layout(tables: dict[str, dict[str, str | None]]) -> str:
    return "".join(_layout_chunks(tables))


class TinyDBBackend:
    """The main state (a JournaledTinyDB), the archive of polled items (another), and a small outbox
    TinyDB file that records each delivery the moment Slack accepts it."""

    def __init__(self, path: Path, *, owner: bool = True) -> None:
        """`owner`: this process runs the bot on these files. It holds a lock on them for its lifetime,
        so that a second bot on the same BOT_DB is refused rather than both posting every alert, and it
        sets damaged files aside. Otherwise (a preview's snapshot) they are only read."""
        self.path = path
        self._lock = StateLock(path) if owner else None
        try:
            self._main = JournaledTinyDB(path, owner=owner)
            self._outbox = TinyDB(str(outbox_path(path)), storage=AtomicJSONStorage)
            try:
                self._outbox.all()
            except DamagedStateError as e:
                if not owner:
                    raise
                set_aside(e, outbox_path(path))
            self._archive = JournaledTinyDB(archive_path(path), owner=owner)
        except BaseException:
            self.close()
            raise
        if owner:
            for state_file in (path, self._main.journal_path, outbox_path(path), archive_path(path)):
                tighten(state_file)
            tighten(self._archive.journal_path)
        items = self._archive.documents("items")
        self._archive_ids: dict[str, str] = {doc["key"]: doc_id for doc_id, doc in items.items()}
        self._next_archive_id = max((int(doc_id) for doc_id in items), default=0) + 1

    @property
    def rewrites(self) -> int:
        """How many times the main file has been rewritten whole since it was opened."""
        return self._main.rewrites

    def load(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {name: self._main.documents(name) for name in TABLES}

    def write(self, changes: Changes) -> None:
        try:
            self._main.write(changes)
        except OSError as e:
            raise StateError(f"cannot write state file {self.path}: {e.strerror or e}") from e

    def log_delivery(self, record: dict[str, Any]) -> None:
        try:
            self._outbox.insert(record)
        except OSError as e:
            raise StateError(f"cannot write outbox {outbox_path(self.path)}: {e.strerror or e}") from e

    def read_deliveries(self) -> list[dict[str, Any]]:
        return [dict(doc) for doc in self._outbox.all()]

    def clear_deliveries(self) -> None:
        try:
            self._outbox.truncate()
        except OSError as e:
            raise StateError(f"cannot write outbox {outbox_path(self.path)}: {e.strerror or e}") from e

    def load_archive(self) -> dict[str, dict[str, Any]]:
        return {doc["key"]: doc for doc in self._archive.documents("items").values()}

    def write_archive(self, changes: dict[str, dict[str, Any] | None]) -> None:
        docs: dict[str, dict[str, Any] | None] = {}
        for key, doc in changes.items():
            if doc is None:
                if key in self._archive_ids:
                    docs[self._archive_ids.pop(key)] = None
                continue
            if key not in self._archive_ids:
                self._archive_ids[key] = str(self._next_archive_id)
                self._next_archive_id += 1
            docs[self._archive_ids[key]] = doc
        try:
            self._archive.write({"items": docs})
        except OSError as e:
            raise StateError(f"cannot write archive {archive_path(self.path)}: {e.strerror or e}") from e

    @property
    def set_aside(self) -> Path | None:
        """Where the main state file was moved because it was damaged, if it was."""
        return self._main.set_aside

    def close(self) -> None:
        # Every write is on disk when it returns: only the lock is left to let go of.
        if self._lock is not None:
            self._lock.release()


class StateLock:
    """An exclusive lock on `<BOT_DB>.lock`, held while the bot runs. The kernel lets go of it when the
    process ends in any way, SIGKILL included, so a crash never leaves a stale lock behind."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = open_private(self.path, os.O_RDWR)
            self._handle: IO[str] | None = os.fdopen(fd, "r+", encoding="utf-8")
        except OSError as e:
            raise StateError(f"cannot write lock file {self.path}: {e.strerror or e}") from e
        if fcntl is None:  # Windows: no flock; running two bots there is left to the operator
            return
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "unknown"
            self._handle.close()
            self._handle = None
            raise StateLockedError(
                f"state file {db_path} is in use by another feedwatch process (pid {holder}, per "
                f"{self.path}): stop that one, or give this one its own BOT_DB"
            ) from e
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"{os.getpid()}\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file lets go of the lock
            self._handle = None


def open_store(path: Path) -> Store:
    return Store(TinyDBBackend(path))
