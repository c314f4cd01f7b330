"""Submission payloads above the inline cap, kept by sha256 in their own SQLite file.

A block carries such a submission by reference (`PayloadRef`), so the bytes live here: put by the
validator the miner handed them to (which also puts them in the DHT), or fetched from the DHT by
any validator that evaluates the submission. Every read and write checks the hash, so a corrupt
file or a lying peer can cost an evaluation but never change one. A separate file from the
node's store, because these writes are large and need no fsync: losing one only means fetching
it again.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

import trio

from dht import records
from validator_node.pipeline.messages import LargeSubmission, PayloadRef, Submission
from validator_node.pipeline.state import Admitted
from wire.envelope import open_envelope
from wire.errors import WireError

log = logging.getLogger("validator_node.payloads")

SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (sha256 BLOB PRIMARY KEY, epoch INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS payloads_epoch ON payloads (epoch);
"""

#: Referenced payloads fetched from the DHT at once by one node (each up to MAX_REF_PAYLOAD bytes).
PAYLOAD_FETCH_CONCURRENCY = 2


class PayloadStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def put(self, data: bytes, epoch: int) -> bytes:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            self.db.execute(
                "INSERT OR IGNORE INTO payloads (sha256, epoch, data) VALUES (?, ?, ?)", (digest, epoch, data)
            )
        return digest

    def get(self, digest: bytes) -> bytes | None:
        with self._lock:
            row = self.db.execute("SELECT data FROM payloads WHERE sha256 = ?", (digest,)).fetchone()
        if row is None:
            return None
        data = bytes(row[0])
        if hashlib.sha256(data).digest() != digest:  # a damaged row: drop it, fetch again
            with self._lock:
                self.db.execute("DELETE FROM payloads WHERE sha256 = ?", (digest,))
            return None
        return data

    def prune(self, below_epoch: int) -> int:
        """Forget payloads of epochs before `below_epoch` (their scores are decided)."""
        with self._lock:
            return self.db.execute("DELETE FROM payloads WHERE epoch < ?", (below_epoch,)).rowcount

    def count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT COUNT(*) FROM payloads").fetchone()[0])


def dht_key_of(payload: bytes) -> bytes:
    """The digest in the DHT key `put_blob` stores `payload` under."""
    return bytes.fromhex(records.blob_key(payload).rsplit("/", 1)[1])


def dht_key(ref: PayloadRef) -> str:
    if ref.size <= records.RECORD_VALUE_CAP:
        return records.content_key(ref.dht_key)
    return f"/{records.NS_MANIFEST}/{ref.dht_key.hex()}"


class PayloadDuty:
    """A mixin of `ValidatorNode`: take large submissions from miners, keep and publish their
    bytes, and find the bytes of a referenced payload when it is time to evaluate it."""

    # state owned by ValidatorNode (declared here for readers and type checkers)
    cfg: Any
    app: Any
    dht: Any
    metrics: Any
    payloads: PayloadStore
    _nursery: trio.Nursery

    def _relay(self, item: object) -> None:  # pragma: no cover - the node defines it
        raise NotImplementedError

    def _on_large_submission(self, item: LargeSubmission) -> str | None:
        """Check that the bytes are the ones the signed reference names, then pool the envelope
        like any submission; only then keep the bytes (so nobody can store data here unsigned)."""
        try:
            sub = open_envelope(item.envelope, Submission, self.cfg.netuid)
        except WireError as exc:
            return str(exc)
        ref = sub.payload_ref
        if ref is None or sub.payload:
            return "a large submission must carry a payload reference and no inline bytes"
        if len(item.payload) != ref.size or hashlib.sha256(item.payload).digest() != ref.sha256:
            return "the payload does not match the signed reference"
        if dht_key_of(item.payload) != ref.dht_key:
            return "the reference names another DHT key than the payload's"
        reason = self.app.offer(item.envelope)
        if reason is not None:
            return reason
        self.payloads.put(item.payload, sub.epoch)
        self.metrics.inc("payloads_stored_total", source="miner")
        if self.dht is not None:
            self._nursery.start_soon(self._publish_payload, item.payload)
        self._relay(item.envelope)
        return None

    async def _publish_payload(self, data: bytes) -> None:
        try:
            await self.dht.put_blob(data)
            self.metrics.inc("payloads_published_total")
        except Exception as exc:  # validators that miss it will ask the DHT, then us, again
            self.metrics.inc("payloads_publish_failed_total")
            log.warning("could not put a %d-byte payload in the DHT: %s", len(data), exc)

    def _payload_fetch_limit(self) -> trio.CapacityLimiter:
        """Referenced payloads being fetched from the DHT at once, node-wide: each holds up to
        MAX_REF_PAYLOAD bytes in memory while its chunks arrive, and evaluations start one task
        per submission, so without this a block full of references would fetch them all at once."""
        limit = getattr(self, "_payload_fetches", None)
        if limit is None:
            limit = self._payload_fetches = trio.CapacityLimiter(PAYLOAD_FETCH_CONCURRENCY)
        return limit

    async def _payload_of(self, sub: Admitted, patience: float = 30.0) -> bytes | None:
        """The submission's payload: inline, from this node's store, or from the DHT (bounded by
        the decided reference: the manifest must describe exactly `ref.size` bytes hashing to
        `ref.sha256` before any chunk is fetched). None if nobody could provide it in time, or
        the reference names a manifest of another value (refused at once: it cannot change)."""
        ref = sub.payload_ref
        if ref is None:
            return sub.payload
        data = await trio.to_thread.run_sync(self.payloads.get, ref.sha256)
        if data is not None:
            return data
        if self.dht is None:
            return None
        data = None
        with trio.move_on_after(patience):
            async with self._payload_fetch_limit():
                while data is None:
                    try:
                        data = await self.dht.get_blob(dht_key(ref), size=ref.size, sha256=ref.sha256)
                    except records.RecordRefused as exc:  # content-addressed: asking again is no use
                        self.metrics.inc("payloads_refused_total", reason=exc.reason)
                        log.warning(
                            "payload %s refused: the DHT record does not match its reference (%s)",
                            ref.sha256.hex()[:12],
                            exc,
                        )
                        return None
                    except Exception as exc:  # not there yet (the miner's validator is still putting it)
                        log.debug("payload %s not in the DHT yet: %s", ref.sha256.hex()[:12], exc)
                        await trio.sleep(1.0)
        if data is None or len(data) != ref.size or hashlib.sha256(data).digest() != ref.sha256:
            self.metrics.inc("payloads_unavailable_total")
            return None
        await trio.to_thread.run_sync(self.payloads.put, data, self.app.state.epoch_of(sub.height))
        self.metrics.inc("payloads_stored_total", source="dht")
        return data
