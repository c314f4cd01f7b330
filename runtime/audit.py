"""Hash-chained audit log of evaluations and host calls, and its verifier.

One JSON line per record: ``{"seq", "prev", "kind", "body", "hash"}`` where
``hash = sha256(canonical_cbor([seq, prev_hash_bytes, kind, body]))`` and ``prev`` is the previous
record's hash (32 zero bytes for the first). Changing, removing, inserting or reordering any record
breaks every later link, so `verify` can name the first record that is not what was written.
JSON keeps the log readable with standard tools; canonical CBOR makes the hash independent of JSON
spacing and key order. A node's hotkey signs the head (record count and last hash) of its log:
`runtime.audit_head`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire import cbor
from wire.hashing import sha256

GENESIS = bytes(32)
AUDIT_FILE = "audit.log"


def default_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "audit" / AUDIT_FILE


def record_hash(seq: int, prev: bytes, kind: str, body: dict[str, Any]) -> bytes:
    return sha256(cbor.dumps([seq, prev, kind, body]))


class AuditLog:
    """Append-only, thread-safe. A torn last line (crash mid-write) is cut off when the log is reopened:
    it was never completed, so nothing relied on it."""

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._seq, self._head = self._recover()
        self._fh = self.path.open("ab")

    def _recover(self) -> tuple[int, bytes]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            back = min(size, 1 << 20)
            fh.seek(size - back)
            tail = fh.read()
            if not tail.endswith(b"\n"):
                cut = tail.rfind(b"\n")
                fh.truncate(size - back + cut + 1 if cut >= 0 else size - back)
                tail = tail[: cut + 1] if cut >= 0 else b""
        lines = tail.splitlines()
        if not lines:
            return 0, GENESIS
        last = json.loads(lines[-1])
        return int(last["seq"]) + 1, bytes.fromhex(last["hash"])

    @property
    def head(self) -> bytes:
        return self._head

    def tip(self) -> tuple[int, bytes]:
        """(records written, hash of the last one), read together: what a signed head vouches for."""
        with self._lock:
            return self._seq, self._head

    def append(self, kind: str, body: dict[str, Any]) -> int:
        """Append one record; returns its sequence number."""
        with self._lock:
            seq, prev = self._seq, self._head
            h = record_hash(seq, prev, kind, body)
            line = json.dumps(
                {"seq": seq, "prev": prev.hex(), "kind": kind, "body": body, "hash": h.hex()},
                sort_keys=True,
                separators=(",", ":"),
            )
            self._fh.write(line.encode() + b"\n")
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())
            self._seq, self._head = seq + 1, h
            return seq

    def close(self) -> None:
        with self._lock:
            self._fh.close()


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int  # records checked and found good
    head: str  # hash of the last good record
    broken_line: int | None = None  # 1-based line of the first broken record
    broken_seq: int | None = None
    reason: str = ""


def verify(path: str | Path, limit: int | None = None) -> VerifyReport:
    """Walk the chain from the start; stop at the first record that does not check out, or after
    `limit` good records (a signed head's prefix: whatever was appended later is not read)."""
    prev = GENESIS
    n = 0
    with Path(path).open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if limit is not None and n >= limit:
                break

            def bad(
                reason: str, seq: int | None = None, lineno: int = lineno, n: int = n, prev: bytes = prev
            ) -> VerifyReport:
                return VerifyReport(False, n, prev.hex(), lineno, seq, reason)

            if not raw.endswith(b"\n"):
                return bad("truncated record (no newline)")
            try:
                rec = json.loads(raw)
            except ValueError:
                return bad("not valid JSON")
            if not isinstance(rec, dict) or set(rec) != {"seq", "prev", "kind", "body", "hash"}:
                return bad("wrong fields")
            seq = rec["seq"]
            if seq != n:
                return bad(f"sequence number {seq}, expected {n}", seq if isinstance(seq, int) else None)
            if rec["prev"] != prev.hex():
                return bad("prev does not match the previous record's hash", seq)
            if not isinstance(rec["kind"], str) or not isinstance(rec["body"], dict):
                return bad("bad kind or body", seq)
            try:
                h = record_hash(seq, prev, rec["kind"], rec["body"])
            except Exception as exc:
                return bad(f"body cannot be hashed: {exc}", seq)
            if h.hex() != rec["hash"]:
                return bad("hash does not match the record's content", seq)
            prev = h
            n += 1
    return VerifyReport(True, n, prev.hex())
