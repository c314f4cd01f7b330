"""The genesis record: what a network started from, written once and verified by hash for ever.

Before this record the registry's genesis (owner key, mechanism count) was re-read from the live
chain at every start, so after the owner changed either, every node replaying from height 0 built
another state than the network's and stopped on its own block 1 (`state_diverged`); a late joiner
took today's stake as the genesis set. Now the genesis validator set, owner, mechanism count,
epoch length, netuid, the chain block they were read at and the chain view epoch 0 starts with are
in one canonical CBOR record (`node.genesis`), created once (by the devnet, by
`validator-node genesis create`, or by a network's first node), stored in the node's store, and
never read from the chain again.

Every block header names the record's sha256 (`validator_node.block.Block.genesis`), so any one
certified block, checkpoint or decided block fetched from the DHT proves which genesis its network
has; a node refuses blocks and checkpoints naming another. A joiner gets the record from a peer
(the checkpoint protocol, request `genesis`) as a `GenesisProof`: the record and the peer's newest
certified block. It accepts it when its hash equals the operator's pin (`--genesis-hash`), or,
with no pin, when the block names that hash and its certificate is signed by validators holding
more than a third of today's chain validator stake (the trust rule of a stranger's checkpoint:
with fewer than a third Byzantine, an honest validator signed it). The record is also put in the
DHT as a content-addressed blob (`/bt-content/<genesis hash>`), for auditors.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from consensus.certificates import CertificateError, verify_vouched
from consensus.messages import DecisionPacket
from consensus.validators import ValidatorSet
from validator_node.chain.base import Chain
from validator_node.chain_view import epoch_info_from_chain, validator_set_of
from validator_node.pipeline.messages import EpochInfo
from validator_node.pipeline.snapshot import ValidatorRow
from wire.codec import U8, U16, U32, U64, Bytes32, Len, decode, encode, wire_message
from wire.errors import WireError

log = logging.getLogger("validator_node.genesis")

MAX_GENESIS = 1024 * 1024  # 4096 neurons of ~60 bytes fit with room; one DHT record
#: a served proof: the record and one certified block (blocks are at most 1 MiB, certificates small)
MAX_GENESIS_PROOF = MAX_GENESIS + 2 * 1024 * 1024 + 64 * 1024
#: the request frame on the checkpoint protocol that asks for the genesis proof
GENESIS_REQUEST = b"genesis"


@wire_message("node.genesis", version=2, max_size=MAX_GENESIS)
class GenesisRecord:
    """The network's starting point. Its hash is sha256 of this canonical encoding.

    Version 2 added `validators_as_miners` (issue 13); the codec knows one version per tag, so a
    version 1 record (file, store, peer) is refused with a line saying so: such a network is
    restarted from a new genesis and empty data directories."""

    netuid: U16
    epoch_blocks: U32  # decided blocks per epoch (a network constant)
    chain_block: U64  # the chain block the fields below were read at
    owner: Bytes32  # the subnet owner's hotkey: the registry's sudo key at height 0
    mechanism_count: U8  # the registry's mechanism count at height 0
    validators: Annotated[tuple[ValidatorRow, ...], Len(1, 4096)]  # epoch 0's set, sorted by hotkey
    chain_view: EpochInfo  # the metagraph and weight parameters at `chain_block` (epoch 0)
    # whether hotkeys holding a validator permit in an epoch's snapshot earn weight for their
    # miner scores (default: no; pipeline.state.unpaid_uids). Always encoded.
    validators_as_miners: bool = False

    def validator_set(self) -> ValidatorSet:
        return ValidatorSet.of((v.hotkey, v.stake) for v in self.validators)


@wire_message("node.genesisproof", version=1, max_size=MAX_GENESIS_PROOF)
class GenesisProof:
    """What a node serves for the `genesis` request: the record and its newest certified block
    (None before the network decided anything), whose header names the record's hash."""

    record: GenesisRecord
    decision: DecisionPacket | None


class GenesisError(RuntimeError):
    """The genesis record cannot be had or does not verify (one line, for the operator)."""


def genesis_hash(record: GenesisRecord) -> bytes:
    return hashlib.sha256(encode(record)).digest()


def parse_hash(text: str) -> bytes:
    """A `--genesis-hash` value: 64 hex digits (an optional 0x is allowed)."""
    t = text.strip().lower().removeprefix("0x")
    try:
        h = bytes.fromhex(t)
    except ValueError:
        h = b""
    if len(h) != 32:
        raise GenesisError(f"--genesis-hash must be 64 hex digits (got {text!r})")
    return h


def record_from_chain(
    chain: Chain, netuid: int, epoch_blocks: int, *, validators_as_miners: bool = False
) -> GenesisRecord:
    """Read a new network's genesis from the chain, once: its validators (permit and stake),
    owner, mechanism count and the chain view epoch 0 starts with; `validators_as_miners` is the
    creator's choice (not a chain fact)."""
    from wire.keys import public_key_of

    mg = chain.metagraph()
    vset = validator_set_of(mg)
    if vset is None:
        raise GenesisError(f"netuid {netuid}: the metagraph has no validator with a permit and stake")
    hp = chain.hyperparameters()
    return GenesisRecord(
        netuid=netuid,
        epoch_blocks=epoch_blocks,
        chain_block=mg.block,
        owner=public_key_of(chain.subnet_owner()),
        mechanism_count=hp.mechanism_count,
        validators=tuple(ValidatorRow(v.hotkey, v.stake) for v in vset.validators),
        chain_view=epoch_info_from_chain(chain),
        validators_as_miners=validators_as_miners,
    )


def load(path: Path) -> GenesisRecord:
    """A genesis file: the record's canonical CBOR bytes (its sha256 is the genesis hash)."""
    try:
        return decode(Path(path).read_bytes(), GenesisRecord)
    except OSError as exc:
        raise GenesisError(f"cannot read the genesis file {path}: {exc.strerror or exc}") from None
    except WireError as exc:
        raise GenesisError(f"{path} is not a genesis record: {exc}{_old_version_hint(exc)}") from None


def _old_version_hint(exc: WireError) -> str:
    if "node.genesis: unsupported version" in str(exc):
        return " (made by an older version: create a new genesis and start from empty data directories)"
    return ""


def save(record: GenesisRecord, path: Path) -> bytes:
    """Write the record's canonical bytes to `path`; return its hash."""
    Path(path).write_bytes(encode(record))
    return genesis_hash(record)


def check_pin(record: GenesisRecord, pin: bytes | None, where: str) -> None:
    if pin is not None and genesis_hash(record) != pin:
        raise GenesisError(
            f"the genesis record {where} has hash {genesis_hash(record).hex()},"
            f" not the pinned --genesis-hash {pin.hex()}"
        )


def verify_proof(data: bytes, *, netuid: int, pin: bytes | None, trust: ValidatorSet) -> GenesisRecord:
    """The record a peer served, if it verifies (else GenesisError saying why): by the pin when
    there is one; without a pin, by a certified block of the network that names its hash and is
    signed by validators holding more than a third of today's chain validator stake (`trust`)."""
    from validator_node.block import Block

    try:
        proof = decode(data, GenesisProof)
    except WireError as exc:
        raise GenesisError(f"malformed genesis proof: {exc}") from None
    record, h = proof.record, genesis_hash(proof.record)
    if record.netuid != netuid:
        raise GenesisError(f"the served genesis is for netuid {record.netuid}, not {netuid}")
    if pin is not None:
        check_pin(record, pin, "served")
        return record
    if proof.decision is None:
        raise GenesisError("the network has decided no block yet, so an unpinned genesis cannot be checked")
    try:
        block = decode(proof.decision.block, Block)
    except WireError as exc:
        raise GenesisError(f"malformed block in the genesis proof: {exc}") from None
    if block.genesis != h:
        raise GenesisError("the served block names another genesis than the served record")
    try:
        verify_vouched(
            proof.decision.certificate,
            trust,
            netuid,
            height=block.height,
            block_hash=hashlib.sha256(proof.decision.block).digest(),
        )
    except CertificateError as exc:
        why = f"the block proving the genesis is not vouched for by today's chain: {exc}"
        raise GenesisError(why) from None
    return record


@dataclass
class Obtained:
    record: GenesisRecord
    source: str  # "store", "file", "peer <addr>", "chain"


async def fetch_from_peers(
    bootstrap: Sequence[str],
    *,
    netuid: int,
    pin: bytes | None,
    trust: ValidatorSet,
    deadline: float = 60.0,
    retry: float = 1.0,
) -> Obtained:
    """Ask the bootstrap peers for the genesis proof (over a short-lived libp2p host), round after
    round until one verifies or `deadline` seconds pass (then GenesisError naming each refusal)."""
    import trio

    last: dict[str, str] = {}
    with trio.move_on_after(deadline):
        while True:
            for addr in bootstrap:
                try:
                    data = await _request(addr, timeout=min(20.0, deadline))
                    if not data:
                        last[addr] = "serves no genesis record"
                        continue
                    if data.startswith(b"refused: "):  # busy or rate limited: ask again next round
                        last[addr] = data.decode(errors="replace")
                        continue
                    record = verify_proof(data, netuid=netuid, pin=pin, trust=trust)
                    return Obtained(record, f"peer {addr}")
                except GenesisError as exc:
                    if pin is not None and "pinned" in str(exc):
                        raise  # a peer of this network serves another genesis than the pin: say so
                    last[addr] = str(exc)
                except Exception as exc:
                    last[addr] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            await trio.sleep(retry)
    why = "; ".join(f"{a.rsplit('/', 1)[-1][-8:]}: {r}" for a, r in last.items()) or "no bootstrap peers"
    raise GenesisError(
        f"no peer served a genesis record that verifies within {deadline:.0f} s ({why});"
        " pass --genesis FILE or --genesis-hash"
    )


async def _request(addr: str, timeout: float) -> bytes:
    """Client side of the `genesis` request on the checkpoint protocol (a throwaway host)."""
    import os

    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from dht.localnet import close_connections
    from validator_node.p2p.framing import FrameReader, write_frame
    from validator_node.p2p.host import CHECKPOINT_PROTOCOL

    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            with trio.fail_after(timeout):
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [TProtocol(CHECKPOINT_PROTOCOL)])
                await write_frame(stream, GENESIS_REQUEST)
                data = await FrameReader(stream, MAX_GENESIS_PROOF).read_frame()
                await stream.close()
        finally:
            await close_connections(host)
    return data or b""


def resolve(
    store: object,
    *,
    netuid: int,
    given: GenesisRecord | None,
    pin: bytes | None,
    chain: Chain | None,
    epoch_blocks: int,
) -> Obtained:
    """The node's genesis record, from (in order) its store, the record it was given (a file or a
    peer), or, for the first node of a new network only (an empty store, no pin), the chain now.
    Stored on first use; never re-read from the chain once stored. GenesisError on a mismatch."""
    from validator_node.store import NodeStore

    assert isinstance(store, NodeStore)
    stored_bytes = store.genesis_record()
    if stored_bytes is not None:
        try:
            stored = decode(stored_bytes, GenesisRecord)
        except WireError as exc:
            raise GenesisError(
                f"{store.path} holds a genesis record this version cannot read: {exc}{_old_version_hint(exc)}"
            ) from None
        check_pin(stored, pin, f"in {store.path}")
        if given is not None and genesis_hash(given) != genesis_hash(stored):
            raise GenesisError(
                f"{store.path} holds genesis {genesis_hash(stored).hex()[:16]}..., not the given"
                f" {genesis_hash(given).hex()[:16]}... (use another --data-dir for another network)"
            )
        return Obtained(stored, "store")
    if store.tip()[0] != 0 or store.base_height() != 0:
        raise GenesisError(
            f"{store.path} has decided blocks but no genesis record (made by an older version):"
            " start from an empty data directory"
        )
    if given is not None:
        check_pin(given, pin, "given")
        obtained = Obtained(given, "given")
    elif pin is not None:
        raise GenesisError(
            f"no genesis record for the pinned hash {pin.hex()[:16]}...: pass --genesis FILE or"
            " a --p2p.bootstrap peer that serves it"
        )
    elif chain is None:
        raise GenesisError("no genesis record and no chain to create one from")
    else:
        obtained = Obtained(record_from_chain(chain, netuid, epoch_blocks), "chain")
    if obtained.record.netuid != netuid:
        raise GenesisError(f"the genesis record is for netuid {obtained.record.netuid}, not {netuid}")
    store.set_genesis_record(encode(obtained.record))
    return obtained
