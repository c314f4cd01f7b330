"""The node's durable state: one SQLite file (WAL) under data/<netuid>/<hotkey>/.

Holds decided blocks with their commit certificates, the durable vote record (written with
`synchronous=FULL` and committed before the vote is sent, so a restarted node never signs two
different values for one height/view/phase), and equivocation evidence.

Calls block; the node runs them through `trio.to_thread`. One connection, used from one thread at
a time (the node awaits each call), opened with check_same_thread=False for that reason.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from consensus.messages import Certificate, DecisionPacket, Equivocation, VoteRecord
from consensus.validators import ValidatorSet
from wire.codec import decode, encode
from wire.errors import WireError

SCHEMA = """
CREATE TABLE IF NOT EXISTS decided (
    height INTEGER PRIMARY KEY, block_hash BLOB NOT NULL, block BLOB NOT NULL, certificate BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, height INTEGER NOT NULL, view INTEGER NOT NULL,
    kind INTEGER NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS votes_height ON votes (height);
CREATE TABLE IF NOT EXISTS evidence (hash BLOB PRIMARY KEY, height INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (height INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS weights_submitted (
    epoch INTEGER NOT NULL, mechid INTEGER NOT NULL, uids TEXT NOT NULL, weights TEXT NOT NULL,
    chain_block INTEGER, result TEXT NOT NULL, PRIMARY KEY (epoch, mechid));
CREATE TABLE IF NOT EXISTS genesis (
    id INTEGER PRIMARY KEY CHECK (id = 0), hash BLOB NOT NULL, record BLOB NOT NULL);
"""


class StoreCorrupt(RuntimeError):
    """The store holds data that does not verify; the node refuses to start on it."""


class NodeStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- votes ------------------------------------------------------------------------------

    def append_vote(self, record: VoteRecord) -> None:
        """Durably record a vote (the transaction commits with fsync before returning)."""
        self.db.execute(
            "INSERT INTO votes (height, view, kind, record) VALUES (?, ?, ?, ?)",
            (record.height, record.view, record.kind, encode(record)),
        )

    def votes_from(self, height: int) -> list[VoteRecord]:
        rows = self.db.execute("SELECT record FROM votes WHERE height >= ? ORDER BY id", (height,)).fetchall()
        try:
            return [decode(bytes(r[0]), VoteRecord) for r in rows]
        except WireError as exc:
            raise StoreCorrupt(f"{self.path}: unreadable vote record: {exc}") from None

    def prune_votes(self, below_height: int) -> int:
        """Delete the vote records of heights below `below_height`; return how many went.

        Only for heights this store has decided *and* checkpointed (`put_checkpoint` calls it): the
        replica reads only the votes above its committed height, so these can never be needed to
        avoid signing twice, and each holds a whole block."""
        below_height = min(below_height, self.tip()[0] + 1)
        return self.db.execute("DELETE FROM votes WHERE height < ?", (below_height,)).rowcount

    def vote_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    # --- decisions --------------------------------------------------------------------------

    def put_decision(self, height: int, block: bytes, certificate: Certificate) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO decided (height, block_hash, block, certificate) VALUES (?, ?, ?, ?)",
            (height, hashlib.sha256(block).digest(), block, encode(certificate)),
        )

    def decision(self, height: int) -> DecisionPacket | None:
        row = self.db.execute("SELECT block, certificate FROM decided WHERE height = ?", (height,)).fetchone()
        if row is None:
            return None
        return DecisionPacket(block=bytes(row[0]), certificate=decode(bytes(row[1]), Certificate))

    def tip(self) -> tuple[int, bytes]:
        row = self.db.execute(
            "SELECT height, block_hash FROM decided ORDER BY height DESC LIMIT 1"
        ).fetchone()
        return (0, bytes(32)) if row is None else (int(row[0]), bytes(row[1]))

    def block_hashes(self) -> list[tuple[int, bytes]]:
        return [
            (int(h), bytes(b))
            for h, b in self.db.execute("SELECT height, block_hash FROM decided ORDER BY height")
        ]

    def check_integrity(self, from_height: int | None = None) -> int:
        """Verify the decided chain is contiguous (from the installed checkpoint, if the node
        started from one) and that each block above `from_height` (default: all) matches its
        stored hash; return the tip height.

        A restart passes the checkpoint it starts from: the blocks it replays are hashed here (and
        checked against their state roots by the replay), the older ones only counted, so the cost
        of a start does not grow with the chain."""
        base = self.base_height()
        low, high, count = self.db.execute(
            "SELECT MIN(height), MAX(height), COUNT(*) FROM decided"
        ).fetchone()
        if count == 0:
            return base
        if low != base + 1 or high - low + 1 != count:
            raise StoreCorrupt(
                f"{self.path}: decided heights are not contiguous from {base + 1} ({count} in {low}..{high})"
            )
        for height, block_hash, block in self.db.execute(
            "SELECT height, block_hash, block FROM decided WHERE height > ? ORDER BY height",
            (base if from_height is None else from_height,),
        ):
            if hashlib.sha256(bytes(block)).digest() != bytes(block_hash):
                raise StoreCorrupt(f"{self.path}: block {height} does not match its hash")
        return int(high)

    # --- evidence ---------------------------------------------------------------------------

    def put_evidence(self, height: int, evidence: Equivocation) -> bool:
        data = encode(evidence)
        cur = self.db.execute(
            "INSERT OR IGNORE INTO evidence (hash, height, data) VALUES (?, ?, ?)",
            (hashlib.sha256(data).digest(), height, data),
        )
        return cur.rowcount > 0

    def evidence_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM evidence").fetchone()[0])

    # --- weights this node submitted to the chain --------------------------------------------

    def record_weights(
        self,
        epoch: int,
        mechid: int,
        uids: list[int],
        weights: list[int],
        chain_block: int | None,
        result: str,
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO weights_submitted (epoch, mechid, uids, weights, chain_block, result)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (epoch, mechid, json.dumps(uids), json.dumps(weights), chain_block, result),
        )

    def submitted_weights(self) -> list[dict[str, object]]:
        rows = self.db.execute(
            "SELECT epoch, mechid, uids, weights, chain_block, result FROM weights_submitted"
            " ORDER BY epoch, mechid"
        ).fetchall()
        return [
            {
                "epoch": e,
                "mechid": m,
                "uids": json.loads(u),
                "weights": json.loads(w),
                "chain_block": b,
                "result": r,
            }
            for e, m, u, w, b, r in rows
        ]

    # --- checkpoints ------------------------------------------------------------------------

    def put_checkpoint(self, height: int, data: bytes, keep: int = 3) -> None:
        """Keep this node's checkpoint of the state after `height` (the newest `keep`, and the one
        it was installed from); the votes of the heights it covers are pruned (`prune_votes`)."""
        self.db.execute("INSERT OR REPLACE INTO checkpoints (height, data) VALUES (?, ?)", (height, data))
        self.db.execute(
            "DELETE FROM checkpoints WHERE height != ? AND height NOT IN"
            " (SELECT height FROM checkpoints ORDER BY height DESC LIMIT ?)",
            (self.base_height(), keep),
        )
        self.prune_votes(height + 1)

    def restart_point(self) -> tuple[int, bytes | None]:
        """Where a restart starts: the newest checkpoint this store holds whose next block it has
        decided (every checkpoint carries that block), as (height, checkpoint); (0, None) if it
        has none and replays from genesis. Starting from the newest rather than the one the store
        was installed from keeps restart time flat as the chain grows."""
        row = self.db.execute(
            "SELECT height, data FROM checkpoints WHERE height >= ? AND height < ?"
            " ORDER BY height DESC LIMIT 1",
            (self.base_height(), self.tip()[0]),
        ).fetchone()
        if row is None:
            base = self.base_height()
            return base, self.checkpoint_at(base) if base else None
        return int(row[0]), bytes(row[1])

    def latest_checkpoint(self) -> bytes | None:
        row = self.db.execute("SELECT data FROM checkpoints ORDER BY height DESC LIMIT 1").fetchone()
        return None if row is None else bytes(row[0])

    def read_latest_checkpoint(self) -> bytes | None:
        """`latest_checkpoint` on a read-only connection of its own, for a worker thread while
        the node's connection is in use (the checkpoint protocol serves peers this way)."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
        try:
            row = db.execute("SELECT data FROM checkpoints ORDER BY height DESC LIMIT 1").fetchone()
            return None if row is None else bytes(row[0])
        finally:
            db.close()

    def checkpoint_at(self, height: int) -> bytes | None:
        row = self.db.execute("SELECT data FROM checkpoints WHERE height = ?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def base_height(self) -> int:
        """Height of the checkpoint this node started from (0: it replayed from genesis)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'base_height'").fetchone()
        return 0 if row is None else int(row[0])

    def install_checkpoint(self, height: int, data: bytes) -> None:
        """Record that this (empty) store starts from the verified checkpoint at `height`."""
        if self.tip()[0] != 0:
            raise StoreCorrupt(f"{self.path}: cannot install a checkpoint into a store that has blocks")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute("INSERT OR REPLACE INTO checkpoints (height, data) VALUES (?, ?)", (height, data))
            self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('base_height', ?)", (str(height),)
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # --- the genesis record (validator_node.genesis) --------------------------------------------

    def genesis_record(self) -> bytes | None:
        """The canonical bytes of the network's genesis record, as first stored (checked against
        the hash stored beside them, so a damaged record stops the node instead of forking it)."""
        row = self.db.execute("SELECT hash, record FROM genesis WHERE id = 0").fetchone()
        if row is None:
            return None
        record = bytes(row[1])
        if hashlib.sha256(record).digest() != bytes(row[0]):
            raise StoreCorrupt(f"{self.path}: the genesis record does not match its hash")
        return record

    def set_genesis_record(self, record: bytes) -> None:
        """Store the genesis record once; a different one later is refused (StoreCorrupt)."""
        h = hashlib.sha256(record).digest()
        self.db.execute("INSERT OR IGNORE INTO genesis (id, hash, record) VALUES (0, ?, ?)", (h, record))
        if self.genesis_record() != record:
            raise StoreCorrupt(f"{self.path}: holds another genesis record than {h.hex()}")

    def genesis_vset(self) -> ValidatorSet | None:
        """The network's first consensus set, as this store recorded it when it was created (a
        restart must replay epoch 0 with the same set, whatever the chain's stake is now)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'genesis_vset'").fetchone()
        if row is None:
            return None
        return ValidatorSet.of((bytes.fromhex(k), int(s)) for k, s in json.loads(row[0]))

    def set_genesis_vset(self, vset: ValidatorSet) -> None:
        value = json.dumps([[v.hotkey.hex(), v.stake] for v in vset.validators])
        self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('genesis_vset', ?)", (value,))
