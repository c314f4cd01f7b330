"""The embedded local chain: a SQLite file (WAL) that the processes of a devnet share.

No subtensor node can run on a developer machine without a container registry, so the devnet
runs against this instead. It models exactly what the node depends on: a block number that
advances with a configurable block time (derived from the genesis timestamp, so every process
agrees without a daemon), a metagraph and hyperparameters from a genesis file, the subnet owner,
and `set_weights` checked by subtensor's own rules (`rules.check_set_weights`). Every accepted
call is recorded, so tests and `validator-node chain weights` can show what each validator set.
Commit-reveal is modelled like CR v4: a commit is checked and recorded at once and becomes
visible (revealed) at the first block of the epoch `reveal_period_epochs` later.

Time is injectable (`clock`, seconds as a float, only used to derive the block number) and
blocks can be advanced explicitly (`advance`), which is what tests do with `block_time_ms = 0`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from validator_node.chain.base import ChainError, Hyperparameters, Metagraph, Neuron, WeightsReceipt
from validator_node.chain.local_commitments import LocalCommitments
from validator_node.chain.local_genesis import Genesis, GenesisNeuron  # noqa: F401 - re-exported
from validator_node.chain.rules import WeightsContext, WeightsRefused, check_set_weights
from wire import cbor, keys

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS neurons (
    uid INTEGER PRIMARY KEY, hotkey TEXT NOT NULL UNIQUE, coldkey TEXT NOT NULL,
    stake INTEGER NOT NULL, validator_permit INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS last_update (
    mechid INTEGER NOT NULL, uid INTEGER NOT NULL, block INTEGER NOT NULL, PRIMARY KEY (mechid, uid));
CREATE TABLE IF NOT EXISTS weights (
    id INTEGER PRIMARY KEY AUTOINCREMENT, block INTEGER NOT NULL, epoch INTEGER NOT NULL,
    hotkey TEXT NOT NULL, uid INTEGER NOT NULL, mechid INTEGER NOT NULL, version_key INTEGER NOT NULL,
    uids TEXT NOT NULL, submitted TEXT NOT NULL, stored TEXT NOT NULL,
    mode TEXT NOT NULL, reveal_block INTEGER, signature TEXT NOT NULL, app_epoch INTEGER);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, block INTEGER NOT NULL, kind TEXT NOT NULL,
    key INTEGER NOT NULL, value TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_at ON history (kind, block);
CREATE TABLE IF NOT EXISTS commitments (
    hotkey TEXT PRIMARY KEY, block INTEGER NOT NULL, data TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commitment_space (
    hotkey TEXT NOT NULL, epoch INTEGER NOT NULL, used INTEGER NOT NULL, PRIMARY KEY (hotkey, epoch));
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, block INTEGER NOT NULL, hotkey TEXT NOT NULL,
    code TEXT NOT NULL, message TEXT NOT NULL);
"""


class LocalChain(LocalCommitments):
    """The embedded chain over one SQLite file. Safe to open from several processes and threads."""

    def __init__(
        self,
        path: str | Path,
        genesis: Genesis | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._tx():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(weights)")}
            if "app_epoch" not in columns:  # a chain file from before records named the epoch
                self._db.execute("ALTER TABLE weights ADD COLUMN app_epoch INTEGER")
            existing = self._meta("genesis")
            if existing is None:
                if genesis is None:
                    raise ChainError(f"{self.path} holds no chain and no genesis was given")
                self._write_genesis(genesis)
            if self._db.execute("SELECT 1 FROM history LIMIT 1").fetchone() is None:
                self._seed_history()  # the state so far, from block 0 (also for older chain files)
            elif genesis is not None and Genesis.from_dict(json.loads(existing)) != self._resolved(genesis):
                raise ChainError(f"{self.path} already holds a different genesis")
        g = Genesis.from_dict(json.loads(self._meta("genesis") or "{}"))
        self.genesis = g
        self.netuid = g.netuid

    # --- storage helpers ---------------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self._db, self._lock)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _resolved(self, genesis: Genesis) -> Genesis:
        if genesis.genesis_time_ms:
            return genesis
        stored = self._meta("genesis")
        t = json.loads(stored)["genesis_time_ms"] if stored else int(self._clock() * 1000)
        return Genesis(**{**genesis.__dict__, "genesis_time_ms": t})

    def _write_genesis(self, genesis: Genesis) -> None:
        g = self._resolved(genesis)
        self._set_meta("genesis", json.dumps(g.to_dict(), sort_keys=True))
        self._set_meta("offset", "0")
        self._set_meta("hyperparameters", json.dumps(asdict(g.hyperparameters), sort_keys=True))
        self._set_meta("owner", g.owner)
        for uid, n in enumerate(g.neurons):
            self._db.execute(
                "INSERT INTO neurons (uid, hotkey, coldkey, stake, validator_permit) VALUES (?, ?, ?, ?, ?)",
                (uid, n.hotkey, n.coldkey, n.stake, int(n.validator_permit)),
            )

    # --- time ----------------------------------------------------------------------------------

    def current_block(self) -> int:
        g = self.genesis
        offset = int(self._meta("offset") or 0)
        elapsed = 0
        if g.block_time_ms > 0:
            elapsed = max(int(self._clock() * 1000) - g.genesis_time_ms, 0) // g.block_time_ms
        return g.genesis_block + elapsed + offset

    def advance(self, blocks: int = 1) -> int:
        """Move the chain forward by `blocks` (for every process sharing the file); returns the new block."""
        if blocks < 0:
            raise ValueError("blocks only move forward")
        with self._tx():
            self._set_meta("offset", str(int(self._meta("offset") or 0) + blocks))
        return self.current_block()

    def epoch(self, block: int | None = None) -> int:
        return self.hyperparameters().epoch_of(self.current_block() if block is None else block, self.netuid)

    # --- reads ---------------------------------------------------------------------------------
    # Every change is also appended to `history` at the block it happened, so a read can be made
    # at a past block as subtensor's can (validators read an epoch's metagraph at a pinned block).

    def metagraph(self, block: int | None = None) -> Metagraph:
        now = self.current_block()
        if block is None or block >= now:
            rows = self._db.execute(
                "SELECT uid, hotkey, coldkey, stake, validator_permit FROM neurons ORDER BY uid"
            ).fetchall()
            neurons = tuple(Neuron(int(u), str(h), str(c), int(s), bool(p)) for u, h, c, s, p in rows)
            return Metagraph(netuid=self.netuid, block=now, neurons=neurons)
        latest: dict[int, str] = {}
        for uid, value in self._db.execute(
            "SELECT key, value FROM history WHERE kind = 'neuron' AND block <= ? ORDER BY id", (block,)
        ):
            latest[int(uid)] = str(value)
        neurons = tuple(
            Neuron(uid, n["hotkey"], n["coldkey"], int(n["stake"]), bool(n["validator_permit"]))
            for uid, n in sorted((u, json.loads(v)) for u, v in latest.items())
        )
        return Metagraph(netuid=self.netuid, block=block, neurons=neurons)

    def hyperparameters(self, block: int | None = None) -> Hyperparameters:
        value = self._meta("hyperparameters") if block is None else self._at("hyperparameters", block)
        return Hyperparameters(**json.loads(value or "{}"))

    def subnet_owner(self, block: int | None = None) -> str:
        return (self._meta("owner") if block is None else self._at("owner", block)) or ""

    def _at(self, kind: str, block: int) -> str | None:
        row = self._db.execute(
            "SELECT value FROM history WHERE kind = ? AND block <= ? ORDER BY id DESC LIMIT 1", (kind, block)
        ).fetchone()
        return None if row is None else str(row[0])

    def _record(self, kind: str, key: int, value: str, block: int | None = None) -> None:
        self._db.execute(
            "INSERT INTO history (block, kind, key, value) VALUES (?, ?, ?, ?)",
            (self.current_block() if block is None else block, kind, key, value),
        )

    def _record_neuron(self, uid: int, block: int | None = None) -> None:
        h, c, st, p = self._db.execute(
            "SELECT hotkey, coldkey, stake, validator_permit FROM neurons WHERE uid = ?", (uid,)
        ).fetchone()
        value = {"hotkey": h, "coldkey": c, "stake": int(st), "validator_permit": bool(p)}
        self._record("neuron", uid, json.dumps(value, sort_keys=True), block)

    def _seed_history(self) -> None:
        for (uid,) in self._db.execute("SELECT uid FROM neurons ORDER BY uid").fetchall():
            self._record_neuron(int(uid), 0)
        self._record("hyperparameters", 0, self._meta("hyperparameters") or "{}", 0)
        self._record("owner", 0, self._meta("owner") or "", 0)

    # --- administration (the local chain's sudo; tests and the devnet use these) ---------------

    def set_hyperparameters(self, **changes: Any) -> Hyperparameters:
        with self._tx():
            hp = Hyperparameters(**{**json.loads(self._meta("hyperparameters") or "{}"), **changes})
            self._set_meta("hyperparameters", json.dumps(asdict(hp), sort_keys=True))
            self._record("hyperparameters", 0, json.dumps(asdict(hp), sort_keys=True))
        return hp

    def set_subnet_owner(self, hotkey_ss58: str) -> None:
        """Rotate the subnet owner's hotkey (on the real chain: the owner's coldkey sets it)."""
        with self._tx():
            self._set_meta("owner", hotkey_ss58)
            self._record("owner", 0, hotkey_ss58)

    def set_neuron(self, uid: int, *, stake: int | None = None, validator_permit: bool | None = None) -> None:
        with self._tx():
            if stake is not None:
                self._db.execute("UPDATE neurons SET stake = ? WHERE uid = ?", (stake, uid))
            if validator_permit is not None:
                self._db.execute(
                    "UPDATE neurons SET validator_permit = ? WHERE uid = ?", (int(validator_permit), uid)
                )
            self._record_neuron(uid)

    def register(
        self, hotkey: str, *, stake: int = 0, validator_permit: bool = False, coldkey: str = ""
    ) -> int:
        """Append a neuron (next uid) and return its uid."""
        with self._tx():
            (n,) = self._db.execute("SELECT COUNT(*) FROM neurons").fetchone()
            self._db.execute(
                "INSERT INTO neurons (uid, hotkey, coldkey, stake, validator_permit) VALUES (?, ?, ?, ?, ?)",
                (int(n), hotkey, coldkey, stake, int(validator_permit)),
            )
            self._record_neuron(int(n))
            return int(n)

    # --- weights -------------------------------------------------------------------------------

    def set_weights(
        self,
        signer: Any,
        uids: Sequence[int],
        weights: Sequence[int],
        *,
        mechid: int = 0,
        version_key: int = 0,
        app_epoch: int | None = None,
    ) -> WeightsReceipt:
        """Check with subtensor's rules and record. `signer` is a wire.keys.Hotkey.

        Like an extrinsic, the call is signed by the hotkey (and verified); the signature is recorded
        with the call, so a test can prove which key set which weights.
        """
        if not (
            callable(getattr(signer, "sign", None)) and isinstance(getattr(signer, "public_key", None), bytes)
        ):
            raise TypeError("the local chain needs a signing hotkey (wire.keys.Hotkey)")
        hotkey = keys.ss58_of(signer.public_key)
        uids_l, values_l = [int(u) for u in uids], [int(w) for w in weights]
        payload = self.call_payload(mechid, uids_l, values_l, version_key, app_epoch)
        signature = bytes(signer.sign(payload))
        if not keys.verify(signer.public_key, payload, signature):
            raise WeightsRefused("BadSignature", f"the signature of {hotkey} does not verify")
        with self._tx():
            block = self.current_block()
            hp = self.hyperparameters()
            row = self._db.execute(
                "SELECT uid, stake, validator_permit FROM neurons WHERE hotkey = ?", (hotkey,)
            ).fetchone()
            (subnet_n,) = self._db.execute("SELECT COUNT(*) FROM neurons").fetchone()
            caller_uid = None if row is None else int(row[0])
            last = 0
            if caller_uid is not None:
                lu = self._db.execute(
                    "SELECT block FROM last_update WHERE mechid = ? AND uid = ?", (mechid, caller_uid)
                ).fetchone()
                last = 0 if lu is None else int(lu[0])
            ctx = WeightsContext(
                netuid=self.netuid,
                subnet_n=int(subnet_n),
                caller_uid=caller_uid,
                caller_stake=0 if row is None else int(row[1]),
                caller_permit=False if row is None else bool(row[2]),
                weights_min_stake=hp.weights_min_stake,
                network_version_key=hp.weights_version_key,
                commit_reveal=False,  # commits are rate-limited like plain sets (CR v4 checks it at commit)
                last_update=last,
                rate_limit=hp.weights_rate_limit,
                min_allowed_weights=hp.min_allowed_weights,
                max_weight_limit=hp.max_weight_limit,
                mechanism_count=hp.mechanism_count,
            )
            try:
                stored = check_set_weights(ctx, uids_l, values_l, version_key, block, mechid)
            except WeightsRefused as exc:
                self._db.execute(
                    "INSERT INTO refusals (block, hotkey, code, message) VALUES (?, ?, ?, ?)",
                    (block, hotkey, exc.code, exc.message),
                )
                raise
            assert caller_uid is not None
            epoch = hp.epoch_of(block, self.netuid)
            mode, reveal_block = "plain", None
            if hp.commit_reveal:
                mode = "commit"
                reveal_block = hp.first_block_of(epoch + hp.reveal_period_epochs, self.netuid)
            self._db.execute(
                "INSERT INTO weights (block, epoch, hotkey, uid, mechid, version_key, uids, submitted,"
                " stored, mode, reveal_block, signature, app_epoch)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    block,
                    epoch,
                    hotkey,
                    caller_uid,
                    mechid,
                    version_key,
                    json.dumps(uids_l),
                    json.dumps(values_l),
                    json.dumps(stored),
                    mode,
                    reveal_block,
                    signature.hex(),
                    app_epoch,
                ),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO last_update (mechid, uid, block) VALUES (?, ?, ?)",
                (mechid, caller_uid, block),
            )
        return WeightsReceipt(
            block=block,
            mode=mode,
            uids=tuple(uids_l),
            weights=tuple(values_l),
            reveal_block=reveal_block,
            message=f"accepted from uid {caller_uid} at block {block}",
        )

    def call_payload(
        self,
        mechid: int,
        uids: Sequence[int],
        weights: Sequence[int],
        version_key: int,
        app_epoch: int | None = None,
    ) -> bytes:
        """What a set_weights signature covers (canonical CBOR, domain-separated). Version 2
        names the app epoch the row was decided for (`Chain.set_weights`)."""
        call = [self.netuid, mechid, list(uids), list(weights), version_key]
        if app_epoch is None:
            return cbor.dumps(["local-chain/set_weights/1", *call])
        return cbor.dumps(["local-chain/set_weights/2", *call, app_epoch])

    def weight_records(
        self, *, epoch: int | None = None, hotkey: str | None = None, revealed_only: bool = False
    ) -> list[WeightRecord]:
        """Every accepted set_weights call (oldest first), optionally for one epoch or hotkey."""
        q = (
            "SELECT id, block, epoch, hotkey, uid, mechid, version_key, uids, submitted, stored, mode,"
            " reveal_block, signature, app_epoch FROM weights"
        )
        cond, args = [], []
        if epoch is not None:
            cond.append("epoch = ?")
            args.append(epoch)
        if hotkey is not None:
            cond.append("hotkey = ?")
            args.append(hotkey)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        now = self.current_block()
        out = []
        for r in self._db.execute(q + " ORDER BY id", args).fetchall():
            rec = WeightRecord(
                id=r[0],
                block=r[1],
                epoch=r[2],
                hotkey=r[3],
                uid=r[4],
                mechid=r[5],
                version_key=r[6],
                uids=tuple(json.loads(r[7])),
                submitted=tuple(json.loads(r[8])),
                stored=tuple(json.loads(r[9])),
                mode=r[10],
                reveal_block=r[11],
                revealed=r[11] is None or now >= r[11],
                signature=bytes.fromhex(r[12]),
                app_epoch=r[13],
            )
            if rec.revealed or not revealed_only:
                out.append(rec)
        return out

    def refusals(self) -> list[tuple[int, str, str, str]]:
        """(block, hotkey, code, message) of every refused call, oldest first."""
        rows = self._db.execute("SELECT block, hotkey, code, message FROM refusals ORDER BY id")
        return [(int(b), str(h), str(c), str(m)) for b, h, c, m in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class WeightRecord:
    id: int
    block: int
    epoch: int
    hotkey: str
    uid: int
    mechid: int
    version_key: int
    uids: tuple[int, ...]
    submitted: tuple[int, ...]
    stored: tuple[int, ...]  # max-upscaled, as the chain stores them
    mode: str
    reveal_block: int | None
    revealed: bool
    signature: bytes  # the hotkey's sr25519 signature over `LocalChain.call_payload(...)`
    app_epoch: int | None = None  # the decided epoch the caller named (signed), if any


class _Tx:
    """`BEGIN IMMEDIATE` ... `COMMIT` under a thread lock: one writer across threads and processes."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._db.execute(
                "ROLLBACK" if exc_type is not None and exc_type is not WeightsRefused else "COMMIT"
            )
        finally:
            self._lock.release()
