"""The local record store: a SQLite file (WAL) of validated DHT records, with size caps.

py-libp2p keeps DHT records only in memory, forgets them after 48 h and evicts by count alone.
This store is what survives a restart and what the adapter re-announces from. Each record passes
the same validator as a network record before it is written, and again before it is handed out,
so a corrupted or hand-edited file cannot make the node serve a bad record.

The caps refuse rather than evict: the records a node stores (decided blocks, checkpoints, its
own payloads) are ones it needs, and silently dropping one is worse than a counted refusal.
Calls are synchronous and short; from trio, call them through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from dht.records import RECORD_VALUE_CAP, RecordRefused


class RecordValidator(Protocol):
    def validate(self, key: str, value: bytes) -> None: ...

    def select(self, key: str, values: list[bytes]) -> int: ...


class StoreFull(RecordRefused):
    """The store's record-count or byte cap would be exceeded."""

    def __init__(self, detail: str) -> None:
        super().__init__("store_full", detail)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    stored_at INTEGER NOT NULL
) WITHOUT ROWID;
"""


class RecordStore:
    """Validated key -> value records in one SQLite file. Thread-safe (one connection, one lock)."""

    def __init__(
        self,
        path: str | Path,
        validator: RecordValidator,
        *,
        max_total_bytes: int = 2 * 1024**3,
        max_records: int = 200_000,
        max_value_bytes: int = RECORD_VALUE_CAP,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.validator = validator
        self.max_total_bytes = max_total_bytes
        self.max_records = max_records
        self.max_value_bytes = max_value_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    def put(self, key: str, value: bytes) -> bool:
        """Validate and store. Returns False if nothing changed.

        A different valid value under a stored key (only block keys can have several) replaces the
        old one only if the validator's `select` prefers it: the same rule the DHT applies, so the
        store and the network keep the same record."""
        value = bytes(value)
        if len(value) > self.max_value_bytes:
            raise RecordRefused("oversize", f"{len(value)} bytes > store cap {self.max_value_bytes}")
        self.validator.validate(key, value)
        with self._lock:
            old = self._db.execute("SELECT size, value FROM records WHERE key = ?", (key,)).fetchone()
            if old is not None and (
                bytes(old[1]) == value or self.validator.select(key, [bytes(old[1]), value]) == 0
            ):
                return False
            old_size = int(old[0]) if old is not None else 0
            new_count = self._count + (0 if old is not None else 1)
            new_bytes = self._bytes - old_size + len(value)
            if new_count > self.max_records:
                raise StoreFull(f"{self.max_records} records already stored")
            if new_bytes > self.max_total_bytes:
                raise StoreFull(f"{len(value)} more bytes would exceed {self.max_total_bytes}")
            self._db.execute(
                "INSERT OR REPLACE INTO records (key, value, size, stored_at) VALUES (?, ?, ?, ?)",
                (key, value, len(value), int(time.time())),
            )
            self._count, self._bytes = new_count, new_bytes
            return True

    def get(self, key: str) -> bytes | None:
        """The stored value, re-validated; a record that no longer validates is deleted."""
        with self._lock:
            row = self._db.execute("SELECT value FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value = bytes(row[0])
        try:
            self.validator.validate(key, value)
        except Exception:
            self.delete(key)
            raise
        return value

    def has(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None

    def delete(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT size FROM records WHERE key = ?", (key,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM records WHERE key = ?", (key,))
            self._count -= 1
            self._bytes -= int(row[0])
            return True

    def keys(self, prefix: str = "") -> list[str]:
        """Keys in order, optionally only those starting with `prefix` (e.g. "/bt-block/7/")."""
        with self._lock:
            if not prefix:
                rows = self._db.execute("SELECT key FROM records ORDER BY key").fetchall()
            else:
                # a range scan on the primary key; avoids LIKE's wildcard characters in keys
                rows = self._db.execute(
                    "SELECT key FROM records WHERE key >= ? AND key < ? ORDER BY key",
                    (prefix, prefix + "\U0010ffff"),
                ).fetchall()
        return [r[0] for r in rows]

    @property
    def count(self) -> int:
        return self._count

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
