"""Adapter over py-libp2p's `KadDHT` (trio): blobs with chunking, decided blocks, a durable store.

What it adds to KadDHT, and why:
  * strict validation with this project's namespaces only (`dht.records`), so every record is
    checked by hash or certificate before KadDHT stores it, serves it, or hands it to us;
  * chunking: KadDHT silently keeps a >1 MiB record local (peers refuse it), so big values are
    split into content-addressed chunks plus a manifest;
  * a SQLite store (`dht.store.RecordStore`): KadDHT forgets records on restart and after 48 h;
  * counters for every operation and every refused record (KadDHT only logs them).

KadDHT's routing table is not filled by `connect()`; the node must call `add_peer` for each peer
it connects to (after identify has run), or puts and gets will find nobody.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import trio
from libp2p.abc import IHost
from libp2p.kad_dht import DHTMode, KadDHT
from libp2p.kad_dht.common import PROTOCOL_ID
from libp2p.peer.id import ID
from libp2p.records.validator import NamespacedValidator
from libp2p.tools.anyio_service import background_trio_service

from consensus.crypto import Scheme
from consensus.messages import DecisionPacket
from dht import kad_fixes, records, yamux_fixes
from dht.memory import BoundedValueStore
from dht.records import (
    NS_BLOCK,
    NS_CHECKPOINT,
    NS_CONTENT,
    NS_MANIFEST,
    RECORD_VALUE_CAP,
    BlockHeader,
    CheckpointIndex,
    CheckpointIndexValidator,
    ChunkManifest,
    DecisionRef,
    DecisionValidator,
    RecordRefused,
    VsetFor,
)
from dht.store import RecordStore, StoreFull
from wire.codec import decode, encode
from wire.errors import WireError

logger = logging.getLogger(__name__)

kad_fixes.install()  # KadDHT answers FIND_NODE for our (long) record keys: see dht/kad_fixes.py
yamux_fixes.install()  # cancelled writes and a blocked reader no longer cost a connection

#: The Kademlia protocol id this DHT speaks (py-libp2p's default, the same as go/rust-libp2p).
DHT_PROTOCOL_ID = str(PROTOCOL_ID)


class MetricsSink(Protocol):
    """Anything with `inc(name, **labels)`, e.g. validator_node.metrics.Metrics."""

    def inc(self, name: str, **labels: str) -> None: ...


class Counters:
    """A minimal in-process MetricsSink, used when the caller gives none (and by tests)."""

    def __init__(self) -> None:
        self.values: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, **labels: str) -> None:
        self.values[(name, tuple(sorted(labels.items())))] += 1

    def get(self, name: str, **labels: str) -> int:
        """Sum of `name` over all label sets that include `labels`."""
        want = set(labels.items())
        return sum(n for (k, lbl), n in self.values.items() if k == name and want <= set(lbl))


class BlobNotFound(LookupError):
    """No peer (and not the local store) had a valid record for the key."""


class _CountingValidator(NamespacedValidator):
    """The strict namespaced validator, counting each refusal, including those of records pushed
    to us by peers (KadDHT calls `validate` inside its stream handler, out of our sight)."""

    def __init__(self, validators: dict[str, Any], strict_validation: bool, metrics: MetricsSink) -> None:
        super().__init__(validators, strict_validation=strict_validation)
        self._metrics = metrics

    def validate(self, key: str, value: bytes) -> None:
        try:
            super().validate(key, value)
        except Exception as exc:
            reason = getattr(exc, "reason", None) or "unknown_namespace"
            self._metrics.inc("dht_records_refused_total", ns=records.namespace_of(key), reason=reason)
            raise


def _key_of(key_or_hash: str | bytes) -> str:
    """Accept a full key, a 64-char hex sha256 or a 32-byte digest (the latter two: content key)."""
    if isinstance(key_or_hash, bytes | bytearray):
        return records.content_key(bytes(key_or_hash))
    if key_or_hash.startswith("/"):
        ns, _ = records.parse_key(key_or_hash)
        if ns not in (NS_CONTENT, NS_MANIFEST):
            raise ValueError(f"{key_or_hash!r} is not a blob key")
        return key_or_hash
    return records.content_key(bytes.fromhex(key_or_hash))


class DhtNode:
    """One node's DHT: a KadDHT server on `host` plus the local store.

    Use inside the host's lifetime: ``async with DhtNode(host, ...).running() as dht: ...``.
    `block_header` (see `records.BlockHeader`) enables checkpoint indexes (/bt-checkpoint/);
    without it this node neither stores nor serves them. `trust_for` (see `records.validators`)
    judges heights whose set `vset_for` does not know.
    """

    def __init__(
        self,
        host: IHost,
        netuid: int,
        vset_for: VsetFor,
        *,
        store: RecordStore | None = None,
        store_path: str | Path | None = None,
        metrics: MetricsSink | None = None,
        scheme: Scheme | None = None,
        block_header: BlockHeader | None = None,
        trust_for: VsetFor | None = None,
        timeout: float = 30.0,
        fetch_concurrency: int = 4,
        blob_concurrency: int = 2,
        memory_budget: int = 16 * 1024 * 1024,
        memory_records: int = 4096,
        trim_interval: float = 5.0,
    ) -> None:
        self.host = host
        self.netuid = netuid
        self.metrics: MetricsSink = metrics if metrics is not None else Counters()
        self.timeout = timeout
        self.memory_budget = memory_budget
        self.memory_records = memory_records
        self.trim_interval = trim_interval
        self._fetch_limit = trio.CapacityLimiter(fetch_concurrency)  # chunks in flight, node-wide
        self.blob_concurrency = blob_concurrency  # chunks in flight for one blob
        table = records.validators(netuid, vset_for, scheme, block_header, trust_for)
        self.decisions: DecisionValidator = table[NS_BLOCK]  # type: ignore[assignment]
        self.checkpoints: CheckpointIndexValidator | None = table.get(NS_CHECKPOINT)  # type: ignore[assignment]
        self.validator = _CountingValidator(table, strict_validation=True, metrics=self.metrics)
        # `store_path` makes a store validated by this node's own validator, closed by `running()`
        self._owns_store = store is None and store_path is not None
        self.store = RecordStore(store_path, self.validator) if self._owns_store else store  # type: ignore[arg-type]
        self.kad = KadDHT(
            host, DHTMode.SERVER, validator=self.validator, validator_changed=True, strict_validation=True
        )
        # a bounded cache in front of the SQLite store (dht.memory; before the service runs)
        self.kad.value_store = BoundedValueStore(
            self.kad.value_store, self.store.get if self.store is not None else None
        )

    # --- lifecycle ---------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DhtNode]:
        """Run the KadDHT service; records already in the store are loaded so peers can fetch them."""
        async with background_trio_service(self.kad), trio.open_nursery() as nursery:
            if self.store is not None:
                await self.load_store()
            nursery.start_soon(self._trim_forever)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()
                if self._owns_store and self.store is not None:
                    self.store.close()

    async def _trim_forever(self) -> None:
        while True:
            await trio.sleep(self.trim_interval)
            self.trim_memory()

    def trim_memory(self) -> int:
        """Evict from KadDHT's in-memory store until it holds at most `memory_budget` value bytes
        in at most `memory_records` records (dht.memory.BoundedValueStore.trim).

        KadDHT caps that store by count only (50,000 records of up to 1 MiB) and keeps each for a
        day; this node puts a record per decided height, and any peer can push valid content
        records into it, so without this a node's RAM grows with the chain. Records pushed by
        peers go first (oldest first), then our own, which the SQLite store still serves.
        Returns the number evicted."""
        vs = self.kad.value_store
        assert isinstance(vs, BoundedValueStore)
        evicted = vs.trim(self.memory_budget, self.memory_records)
        for _ in evicted:
            self.metrics.inc("dht_memory_evicted_total")
        return len(evicted)

    async def load_store(self) -> int:
        """Put the stored records KadDHT cannot read through to (the checkpoint index: mutable)
        into its in-memory store for serving; the rest are served from the store when asked for
        (dht.memory), so a restart does not load a day of blocks into RAM."""
        assert self.store is not None
        n = 0
        for key in await trio.to_thread.run_sync(self.store.keys, f"/{NS_CHECKPOINT}/"):
            try:
                value = await trio.to_thread.run_sync(self.store.get, key)
            except Exception as exc:  # a record that no longer validates was deleted by get()
                logger.warning("dropped stored record %s: %s", key, exc)
                continue
            if value is not None:
                self.kad.value_store.put(key.encode(), value)
                n += 1
        return n

    async def add_peer(self, peer_id: ID) -> bool:
        """Add a connected peer to the routing table (connect() alone does not)."""
        added = await self.kad.add_peer(peer_id)
        self.metrics.inc("dht_peers_added_total", result="ok" if added else "refused")
        return added

    def routing_table_size(self) -> int:
        return self.kad.get_routing_table_size()

    async def republish(self, prefix: str = "") -> int:
        """Re-announce stored records to the closest peers (KadDHT drops records after 48 h, and a
        node that just joined holds nothing). Returns how many records were pushed."""
        if self.store is None:
            return 0
        n = 0
        for key in await trio.to_thread.run_sync(self.store.keys, prefix):
            value = await trio.to_thread.run_sync(self.store.get, key)
            if value is not None:
                await self._announce(key, value)
                n += 1
        return n

    # --- blobs -------------------------------------------------------------------------------

    async def put_blob(self, value: bytes) -> str:
        """Store a blob; returns its key (`records.blob_key(value)`). Values over one record's cap
        go as chunks plus a manifest; the manifest is stored last, so a reader that finds it can
        find every chunk."""
        value = bytes(value)
        try:
            if len(value) <= RECORD_VALUE_CAP:
                key = records.content_key(hashlib.sha256(value).digest())
                await self._put(key, value)
            else:
                manifest, chunks = records.split(value)
                await self._put_many(
                    [(records.content_key(h), c) for h, c in zip(manifest.chunks, chunks, strict=True)]
                )
                key = records.manifest_key(manifest)
                await self._put(key, encode(manifest))
        except Exception:
            self.metrics.inc("dht_ops_total", op="put_blob", result="error")
            raise
        self.metrics.inc("dht_ops_total", op="put_blob", result="ok")
        return key

    async def get_blob(
        self,
        key_or_hash: str | bytes,
        *,
        size: int | None = None,
        sha256: bytes | None = None,
        concurrency: int | None = None,
    ) -> bytes:
        """Fetch a blob by key (or content hash), verifying each chunk and the whole value.
        Raises BlobNotFound if nobody has a valid copy, RecordRefused if the parts do not join.

        `size` and `sha256` (from a signed reference) bound the fetch: a manifest that describes
        another value is refused before any chunk is asked for, and each chunk must have exactly
        the length the manifest gives it, so no more than `size` bytes are ever accepted.
        `concurrency` caps this call's chunks in flight (default `blob_concurrency`), under the
        node-wide `fetch_concurrency`, so one blob cannot take every fetch slot."""
        key = _key_of(key_or_hash)
        try:
            single = key.startswith(f"/{NS_CONTENT}/")
            if single and sha256 is not None and key != records.content_key(sha256):
                raise RecordRefused("ref_mismatch", f"{key} is not the content key of the reference")
            if single and size is not None and size > RECORD_VALUE_CAP:
                raise RecordRefused("ref_mismatch", f"{size} bytes cannot be one content record")
            value = await self._get(key, length=size if single else None)
            if key.startswith(f"/{NS_MANIFEST}/"):
                manifest = decode(value, ChunkManifest)
                records.check_against(manifest, size, sha256)
                value = await self._get_chunks(manifest, concurrency)
        except BlobNotFound:
            self.metrics.inc("dht_ops_total", op="get_blob", result="not_found")
            raise
        except RecordRefused as exc:
            self.metrics.inc("dht_ops_total", op="get_blob", result="refused")
            self.metrics.inc("dht_blobs_refused_total", reason=exc.reason)
            raise
        except Exception:
            self.metrics.inc("dht_ops_total", op="get_blob", result="error")
            raise
        self.metrics.inc("dht_ops_total", op="get_blob", result="ok")
        return value

    async def _get_chunks(self, manifest: ChunkManifest, concurrency: int | None = None) -> bytes:
        """The chunks of a checked manifest, at most `concurrency` in flight for this blob (and
        `fetch_concurrency` for the node). The first failure (a chunk nobody has, or one of the
        wrong length) cancels the chunks still in flight and is raised as itself."""
        records.check_manifest(manifest)
        limit = trio.CapacityLimiter(concurrency or self.blob_concurrency)
        chunks: list[bytes | None] = [None] * len(manifest.chunks)
        failures: list[Exception] = []
        accepted = 0

        async def fetch(i: int, digest: bytes, cancel: trio.CancelScope) -> None:
            nonlocal accepted
            try:
                async with limit, self._fetch_limit:
                    key = records.content_key(digest)
                    chunk = await self._get(key, length=records.chunk_length(manifest, i))
                accepted += len(chunk)
                if accepted > manifest.total_size:  # cannot happen with exact lengths; a backstop
                    raise RecordRefused("oversize", f"chunks add up to more than {manifest.total_size} bytes")
                chunks[i] = chunk
            except Exception as exc:
                failures.append(exc)
                cancel.cancel()

        async with trio.open_nursery() as nursery:
            for i, digest in enumerate(manifest.chunks):
                nursery.start_soon(fetch, i, digest, nursery.cancel_scope)
        if failures:
            raise failures[0]
        return records.join(manifest, [c for c in chunks if c is not None])

    # --- decided blocks ----------------------------------------------------------------------

    async def put_decision(self, netuid: int, height: int, packet: DecisionPacket) -> str:
        """Store a decided block with its commit certificate under /bt-block/<netuid>/<height>.
        Refused (RecordRefused) unless the certificate is a quorum of `vset_for(height)`."""
        if netuid != self.netuid:
            raise RecordRefused("wrong_netuid", f"this DHT serves netuid {self.netuid}, not {netuid}")
        key = records.block_key(netuid, height)
        try:
            value = encode(packet)
            if len(value) > RECORD_VALUE_CAP:
                # the block bytes are a blob whose sha256 is the certified block hash
                manifest, chunks = records.split(packet.block)
                await self._put_many(
                    [(records.content_key(h), c) for h, c in zip(manifest.chunks, chunks, strict=True)]
                )
                value = encode(DecisionRef(certificate=packet.certificate, block=manifest))
            await self._put(key, value)
        except Exception:
            self.metrics.inc("dht_ops_total", op="put_decision", result="error")
            raise
        self.metrics.inc("dht_ops_total", op="put_decision", result="ok")
        return key

    async def get_decision(self, netuid: int, height: int) -> DecisionPacket | None:
        """The certified decided block at `height`, or None if no peer has a valid one."""
        key = records.block_key(netuid, height)
        try:
            value = await self._get(key)
            rec = self.decisions.decode_valid(key, value)
            if isinstance(rec, DecisionRef):
                block = await self._get_chunks(rec.block)
                rec = DecisionPacket(block=block, certificate=rec.certificate)
        except BlobNotFound:
            self.metrics.inc("dht_ops_total", op="get_decision", result="not_found")
            return None
        except Exception:
            self.metrics.inc("dht_ops_total", op="get_decision", result="error")
            raise
        self.metrics.inc("dht_ops_total", op="get_decision", result="ok")
        return rec

    # --- checkpoints -------------------------------------------------------------------------

    async def put_checkpoint(
        self, netuid: int, height: int, snapshot: bytes, next_block: DecisionPacket
    ) -> str:
        """Publish the checkpoint after block `height`: the snapshot as a blob (chunked above one
        record), then the subnet's index record naming it (`records.CheckpointIndex`). The index
        goes last, so a reader that finds it can find the snapshot. Refused (RecordRefused) unless
        `next_block` is certified and commits to sha256(snapshot); returns the index key. An index
        older than the one held already is kept out (select prefers the newer)."""
        if netuid != self.netuid:
            raise RecordRefused("wrong_netuid", f"this DHT serves netuid {self.netuid}, not {netuid}")
        if self.checkpoints is None:
            raise RecordRefused("unknown_namespace", "this DhtNode was built without a block_header")
        key = records.checkpoint_key(netuid)
        try:
            manifest = records.split(snapshot)[0] if len(snapshot) > RECORD_VALUE_CAP else None
            try:
                value = encode(CheckpointIndex(height=height, next_block=next_block, snapshot=manifest))
            except WireError as exc:  # the next block is too big to sit in one record with it
                raise RecordRefused("oversize", f"checkpoint index: {exc}") from None
            _, snapshot_key = self.checkpoints.decode_valid(key, value)  # before anything is stored
            if records.blob_key(snapshot) != snapshot_key:
                raise RecordRefused("root_mismatch", "the snapshot is not the state the block commits to")
            await self.put_blob(snapshot)
            await self._put(key, value)
        except Exception:
            self.metrics.inc("dht_ops_total", op="put_checkpoint", result="error")
            raise
        self.metrics.inc("dht_ops_total", op="put_checkpoint", result="ok")
        logger.debug("published checkpoint %d (snapshot %s)", height, snapshot_key)
        return key

    async def get_checkpoint(self, netuid: int) -> tuple[int, bytes, DecisionPacket] | None:
        """The newest checkpoint the network holds for `netuid`, as (height, snapshot bytes, next
        block with certificate), or None. The index is asked of the network even when this node
        holds one (the key is mutable, and a stale local copy must not hide a newer one); the
        snapshot is fetched and checked against the certified state root (by hash, chunk by chunk).
        Raises BlobNotFound / RecordRefused when a valid index names a snapshot nobody serves."""
        if self.checkpoints is None:
            raise RecordRefused("unknown_namespace", "this DhtNode was built without a block_header")
        key = records.checkpoint_key(netuid)
        value = await self._get_newest(key)
        if value is None:
            self.metrics.inc("dht_ops_total", op="get_checkpoint", result="not_found")
            return None
        try:
            rec, snapshot_key = self.checkpoints.decode_valid(key, value)
            snapshot = await self.get_blob(snapshot_key)
        except Exception:
            self.metrics.inc("dht_ops_total", op="get_checkpoint", result="error")
            raise
        self.metrics.inc("dht_ops_total", op="get_checkpoint", result="ok")
        return rec.height, snapshot, rec.next_block

    async def _get_newest(self, key: str) -> bytes | None:
        """The best valid value for a key that can hold several (by `select`): ours or the
        network's. KadDHT's get_value answers from local memory whenever it holds the key, so the
        local entry is set aside while the network is asked; afterwards the local entry (memory
        and store) is the best of all, whatever KadDHT or a peer's PUT left there meanwhile."""
        kb = key.encode()
        vs = self.kad.value_store
        held = vs.store.pop(kb, None)
        remote = None
        try:
            with trio.move_on_after(self.timeout):
                remote = await self.kad.get_value(key)
        finally:
            if held is not None and kb not in vs.store:
                vs.store[kb] = held
        after = vs.store.get(kb)  # what KadDHT kept, or a peer put meanwhile
        candidates: list[bytes] = []
        for value in (
            held[0].value if held is not None else None,
            remote,
            after[0].value if after is not None else None,
        ):
            if value is not None and value not in candidates:
                try:
                    self.validator.validate(key, value)  # KadDHT validated remote too; this is ours
                    candidates.append(value)
                except RecordRefused:
                    pass  # counted by the validator
        stored = None
        if self.store is not None:
            try:
                stored = await trio.to_thread.run_sync(self.store.get, key)  # re-validated by get
            except Exception:
                stored = None  # deleted as invalid
            if stored is not None and stored not in candidates:
                candidates.append(stored)
        if not candidates:
            return None
        best = candidates[self.validator.select(key, candidates)]
        local = vs.store.get(kb)
        if local is None or local[0].value != best:  # keep (and serve) the newest we have seen
            vs.put(kb, best)
        if self.store is not None and best != stored:
            try:
                await trio.to_thread.run_sync(self.store.put, key, best)
            except StoreFull:
                self.metrics.inc("dht_store_refused_total", reason="store_full")
        return best

    # --- records -----------------------------------------------------------------------------

    async def _put(self, key: str, value: bytes) -> None:
        self.validator.validate(key, value)  # refuse before anything is stored anywhere
        if self.store is not None:
            try:
                await trio.to_thread.run_sync(self.store.put, key, value)
            except StoreFull:
                self.metrics.inc("dht_store_refused_total", reason="store_full")
                raise
        await self._announce(key, value)

    async def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        async def one(key: str, value: bytes) -> None:
            async with self._fetch_limit:
                await self._put(key, value)

        async with trio.open_nursery() as nursery:
            for key, value in items:
                nursery.start_soon(one, key, value)

    async def _announce(self, key: str, value: bytes) -> None:
        try:
            with trio.fail_after(self.timeout):
                await self.kad.put_value(key, value)
        except ValueError as exc:
            # KadDHT refuses to replace a local record that select() prefers: a valid record for
            # this key is already held (only block keys can have several valid values)
            if "Refusing to replace" not in str(exc):
                raise

    async def _get(self, key: str, length: int | None = None) -> bytes:
        """A validated value: from the local store, else the DHT (then kept in the store).
        With `length`, a value of any other length is refused (RecordRefused "bad_chunk") and
        not stored: a manifest's chunk, or a referenced blob, is exactly that long."""
        if self.store is not None:
            try:
                value = await trio.to_thread.run_sync(self.store.get, key)
            except Exception:
                value = None  # deleted as invalid; fetch a good copy
            if value is not None:
                _check_length(key, value, length)
                return value
        value = None
        # content and manifest records are immutable (valid iff they hash to the key), so the first
        # valid answer is the answer: quorum=1 stops the lookup there, instead of waiting for every
        # close peer and then re-pushing the whole record to each that lacked it (py-libp2p's entry
        # correction), which halves the time a multi-chunk blob takes to fetch
        quorum = 1 if key.startswith((f"/{NS_CONTENT}/", f"/{NS_MANIFEST}/")) else 0
        with trio.move_on_after(self.timeout):
            value = await self.kad.get_value(key, quorum=quorum)
        if value is None:
            raise BlobNotFound(key)
        self.validator.validate(key, value)  # KadDHT validated it too; this one is ours
        try:
            _check_length(key, value, length)
        except RecordRefused:  # KadDHT kept what it fetched in memory: keep nothing we refused
            vs = self.kad.value_store
            if key.encode() not in vs.local_keys:
                vs.store.pop(key.encode(), None)
            raise
        if self.store is not None:
            try:
                await trio.to_thread.run_sync(self.store.put, key, value)
            except StoreFull:
                self.metrics.inc("dht_store_refused_total", reason="store_full")
        return value


def _check_length(key: str, value: bytes, length: int | None) -> None:
    if length is not None and len(value) != length:
        raise RecordRefused("bad_chunk", f"{key} holds {len(value)} bytes, {length} expected")


def counters_of(dht: DhtNode) -> Callable[..., int]:
    """Shorthand for tests and benches: `counters_of(dht)("dht_ops_total", op="get_blob")`."""
    metrics = dht.metrics
    if not isinstance(metrics, Counters):
        raise TypeError("the DhtNode was given an external metrics sink")
    return metrics.get
