"""TinyDB files for the store: the main state file, written once per cycle by an atomic rename, and a
small outbox file beside it that records each delivery the moment Slack accepts it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage
from tinydb.table import Document

from bot.errors import StateError
from bot.store import TABLES, Changes, Store


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
        except (OSError, UnicodeDecodeError) as e:
            raise StateError(
                f"cannot read state file {self.path}: {getattr(e, 'strerror', None) or e}"
            ) from e
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StateError(f"state file {self.path} is damaged ({e}); move it aside to start afresh") from e
        if not isinstance(data, dict):
            raise StateError(f"state file {self.path} is not a TinyDB file; move it aside to start afresh")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
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


class TinyDBBackend:
    """The main TinyDB file (written once per cycle through a write cache) and a small outbox TinyDB file
    beside it that records each delivery the moment Slack accepts it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        caching = CachingMiddleware(AtomicJSONStorage)  # type: ignore[no-untyped-call]  # TinyDB middlewares are untyped
        caching.WRITE_CACHE_SIZE = 10**9  # flush only when we say: one write per cycle
        self._db = TinyDB(str(path), storage=caching)
        self._caching = caching
        self._outbox = TinyDB(str(outbox_path(path)), storage=AtomicJSONStorage)
        archive_caching = CachingMiddleware(AtomicJSONStorage)  # type: ignore[no-untyped-call]
        archive_caching.WRITE_CACHE_SIZE = 10**9
        self._archive = TinyDB(str(archive_path(path)), storage=archive_caching)
        self._archive_caching = archive_caching
        self._archive_ids: dict[str, int] = {}

    def load(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {name: {str(doc.doc_id): dict(doc) for doc in self._db.table(name).all()} for name in TABLES}

    def write(self, changes: Changes) -> None:
        try:
            self._apply(changes)
        except OSError as e:
            raise StateError(f"cannot write state file {self.path}: {e.strerror or e}") from e

    def _apply(self, changes: Changes) -> None:
        for table_name, docs in changes.items():
            table = self._db.table(table_name)
            removed = [
                int(doc_id)
                for doc_id, doc in docs.items()
                if doc is None and table.contains(doc_id=int(doc_id))
            ]
            if removed:
                table.remove(doc_ids=removed)
            for doc_id, doc in docs.items():
                if doc is not None:
                    table.upsert(Document(doc, doc_id=int(doc_id)))
        self._caching.flush()  # type: ignore[no-untyped-call]

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
        docs = {}
        for doc in self._archive.table("items").all():
            self._archive_ids[doc["key"]] = doc.doc_id
            docs[doc["key"]] = dict(doc)
        return docs

    def write_archive(self, changes: dict[str, dict[str, Any] | None]) -> None:
        table = self._archive.table("items")
        try:
            removed = [
                self._archive_ids.pop(key)
                for key, doc in changes.items()
                if doc is None and key in self._archive_ids
            ]
            if removed:
                table.remove(doc_ids=removed)
            for key, doc in changes.items():
                if doc is None:
                    continue
                if key in self._archive_ids:
                    table.upsert(Document(doc, doc_id=self._archive_ids[key]))
                else:
                    self._archive_ids[key] = table.insert(doc)
            self._archive_caching.flush()  # type: ignore[no-untyped-call]
        except OSError as e:
            raise StateError(f"cannot write archive {archive_path(self.path)}: {e.strerror or e}") from e

    def close(self) -> None:
        self._caching.flush()  # type: ignore[no-untyped-call]
        self._archive_caching.flush()  # type: ignore[no-untyped-call]


def open_store(path: Path) -> Store:
    return Store(TinyDBBackend(path))
