"""A certified chain built offline: what a subnet's validators would have decided, for the sync
bench (`bench_sync.py`) and the DHT sync tests (`tests/node/test_dht_sync.py`).

Everything is real except the network: an embedded local chain whose metagraph registers the
owner, the validators and the miners (sr25519 hotkeys); blocks built and applied by the node's own
`Application` (so every state root, weight row and submission check is the node's); submissions
and attestations signed by those hotkeys; and every block carrying a commit certificate signed by
a quorum of the validators' hotkeys. A fresh `ValidatorNode` on the same chain accepts all of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from consensus.certificates import build_certificate, vote_signing_bytes
from consensus.messages import PHASE_COMMIT, DecisionPacket
from consensus.validators import ValidatorSet
from dht.localnet import close_connections
from validator_node.app import Application
from validator_node.block import build_block
from validator_node.chain.base import Hyperparameters
from validator_node.chain.local import Genesis, GenesisNeuron, LocalChain
from validator_node.genesis import record_from_chain
from validator_node.pipeline.messages import Attestation, BlockBody, RegistryItem, Submission
from validator_node.pipeline.snapshot import Checkpoint, snapshot
from validator_node.pipeline.state import submission_id
from wire.codec import encode
from wire.envelope import SignedEnvelope, seal
from wire.keys import Hotkey

TAO = 10**9
STAKES = (4000 * TAO, 3000 * TAO, 2000 * TAO, 1000 * TAO)  # the first three hold a quorum


@dataclass
class World:
    netuid: int
    epoch_blocks: int
    chain: LocalChain
    owner: Hotkey
    validators: list[Hotkey]
    miners: list[Hotkey]
    vset: ValidatorSet
    app: Application  # the state the network reached, block by block
    decisions: dict[int, DecisionPacket] = field(default_factory=dict)
    snapshots: dict[int, bytes] = field(default_factory=dict)  # encoded, after each epoch's last block

    @property
    def height(self) -> int:
        return self.app.tip_height

    def certify(self, height: int, block: bytes, signers: list[Hotkey] | None = None) -> DecisionPacket:
        """A commit certificate over `block` at `height` (default signers: a quorum)."""
        bh = hashlib.sha256(block).digest()
        data = vote_signing_bytes(self.netuid, PHASE_COMMIT, height, 0, bh)
        signers = self.validators[:3] if signers is None else signers
        sigs = {k.public_key: k.sign(data) for k in signers}
        return DecisionPacket(block=block, certificate=build_certificate(PHASE_COMMIT, height, 0, bh, sigs))

    def decide(self, body: BlockBody | None = None) -> DecisionPacket:
        """Build the next block (from `body`, else as an honest leader would from the pools),
        certify it and apply it."""
        app = self.app
        h = app.tip_height + 1
        proposer = self.vset.leader(h, 0)
        chain_block = self.chain.current_block()
        if body is None:
            block = app.propose(h, proposer, chain_block)
        else:
            block = build_block(
                h, app.tip_hash, proposer, chain_block, app.root, encode(body), genesis=app.genesis_hash
            )
        pkt = self.certify(h, block)
        app.apply_decided(h, block)
        self.decisions[h] = pkt
        if app.state.is_epoch_end(h):
            self.snapshots[h] = encode(snapshot(app.state))
        return pkt

    def decide_until(self, height: int) -> None:
        while self.height < height:
            self.decide()

    def checkpoint(self, height: int) -> Checkpoint:
        """The checkpoint after epoch-end `height` (block height+1 must be decided)."""
        return Checkpoint(height, self.snapshots[height], self.decisions[height + 1])

    # --- items ---------------------------------------------------------------------------------

    def submission(self, miner: Hotkey, challenge_id: str, nonce: int, payload: bytes) -> SignedEnvelope:
        epoch = self.app.state.epoch_of(self.height + 1)
        return seal(Submission(challenge_id, epoch, nonce, payload), miner, self.netuid)

    def attestations(self, sids: list[bytes], score: int = 500_000_000) -> list[SignedEnvelope]:
        """Every validator but the last attests every submission (sorted as a block needs)."""
        epoch = self.app.state.epoch_of(self.height + 1)
        envs = [
            seal(Attestation(epoch, sid, score, None), v, self.netuid)
            for sid in sorted(sids)
            for v in sorted(self.validators[:3], key=lambda k: k.public_key)
        ]
        return envs


def make_world(root: Path, *, netuid: int, epoch_blocks: int, miners: int = 0, tag: str = "cc") -> World:
    """A local chain with an owner (uid 0), four validators and `miners` miners, and an
    application at genesis. Keys are derived from `tag`, so two worlds with the same tag agree."""
    owner = Hotkey.from_name(f"{tag}-owner")
    validators = [Hotkey.from_name(f"{tag}-v{i}") for i in range(len(STAKES))]
    miner_keys = [Hotkey.from_name(f"{tag}-m{i}") for i in range(miners)]
    neurons = (
        GenesisNeuron(owner.ss58, 0, False),
        *(GenesisNeuron(v.ss58, s, True) for v, s in zip(validators, STAKES, strict=True)),
        *(GenesisNeuron(m.ss58, 0, False) for m in miner_keys),
    )
    genesis = Genesis(
        netuid=netuid,
        owner=owner.ss58,
        neurons=neurons,
        hyperparameters=Hyperparameters(tempo=epoch_blocks),
        block_time_ms=0,
        genesis_time_ms=1,
    )
    root.mkdir(parents=True, exist_ok=True)
    chain = LocalChain(root / "chain.sqlite", genesis)
    vset = ValidatorSet.of((v.public_key, s) for v, s in zip(validators, STAKES, strict=True))
    app = Application(record_from_chain(chain, netuid, epoch_blocks))  # the world's genesis record
    assert app.genesis_vset == vset
    return World(netuid, epoch_blocks, chain, owner, validators, miner_keys, vset, app)


def registry_body(world: World, challenges: list[object]) -> list[RegistryItem]:
    """The owner's signed items adding and activating `challenges` (devnet.ExampleChallenge)."""
    from registry.manifest import ChallengeManifest, ModulePolicy
    from registry.state import OP_ACTIVATE, sign_command, sign_manifest

    items: list[RegistryItem] = []
    nonce = 0
    for c in challenges:
        nonce += 1
        manifest = ChallengeManifest(
            challenge_id=c.challenge_id,  # type: ignore[attr-defined]
            name=c.challenge_id,  # type: ignore[attr-defined]
            version=1,
            wasm_sha256=hashlib.sha256(c.wasm).digest(),  # type: ignore[attr-defined]
            wasm_size=len(c.wasm),  # type: ignore[attr-defined]
            abi_version=1,
            policy=ModulePolicy.from_dict(c.policy),  # type: ignore[attr-defined]
            emission_share_ppb=c.share_ppb,  # type: ignore[attr-defined]
            mechanism_id=0,
            task=c.task,  # type: ignore[attr-defined]
            activation_epoch=0,
            nonce=nonce,
        )
        items.append(RegistryItem(sign_manifest(manifest, world.owner, world.netuid), c.wasm))  # type: ignore[attr-defined]
    for c in challenges:
        nonce += 1
        cmd = sign_command(OP_ACTIVATE, c.challenge_id, nonce, world.owner, world.netuid)  # type: ignore[attr-defined]
        items.append(RegistryItem(cmd, None))
    return items


def sorted_by_id(envs: list[SignedEnvelope]) -> list[SignedEnvelope]:
    return sorted(envs, key=submission_id)


# --- validators on the network ---------------------------------------------------------------------


@dataclass
class Peer:
    transport: object  # validator_node.p2p.host.ConsensusTransport
    dht: object  # dht.kad.DhtNode
    metrics: object  # validator_node.metrics.Metrics

    @property
    def addr(self) -> str:
        return self.transport.addrs()[0]  # type: ignore[attr-defined, no-any-return]


@asynccontextmanager
async def serving_peers(
    world: World, serve: list[Callable[[], bytes | None]], *, mesh: bool = False
) -> AsyncIterator[list[Peer]]:
    """Validators 0..len(serve)-1 of `world` on loopback: each a real consensus transport (the
    node can link with it: hotkey attestation, gossip) with a DHT, serving `serve[i]()` on the
    checkpoint protocol. They take no part in consensus; what the node sends them is dropped.
    With `mesh`, their DHTs know each other (a put reaches all of them)."""
    from dht.kad import DhtNode
    from validator_node.metrics import Metrics
    from validator_node.p2p.host import ConsensusTransport
    from validator_node.state_sync import block_header

    permitted = frozenset(v.public_key for v in world.validators)
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        peers = []
        for i, served in enumerate(serve):
            send, recv = trio.open_memory_channel[tuple[bytes, bytes]](1 << 16)
            nursery.start_soon(_drain, recv)
            metrics = Metrics()
            t = ConsensusTransport(
                hotkey=world.validators[i],
                netuid=world.netuid,
                peer_seed=hashlib.sha256(f"certified-chain-peer-{i}".encode()).digest(),
                listen_host="127.0.0.1",
                listen_port=0,
                permitted=lambda: permitted,
                current_block=world.chain.current_block,
                metrics=metrics,
                inbound=send,
                checkpoint=served,
                on_app_item=lambda data: None,
            )
            await nursery.start(t.run, [])
            dht = DhtNode(
                t.host,
                world.netuid,
                lambda h: world.vset,
                metrics=metrics,
                block_header=block_header,
                timeout=20,
            )
            await stack.enter_async_context(dht.running())
            peers.append(Peer(t, dht, metrics))
        if mesh:
            await _mesh([p.dht for p in peers])
        yield peers
        for p in peers:  # py-libp2p leaves sockets open when a host stops with live connections
            await close_connections(p.transport.host)  # type: ignore[attr-defined]
        await stack.aclose()
        nursery.cancel_scope.cancel()


async def _mesh(dhts: list) -> None:  # type: ignore[type-arg]
    from libp2p.peer.peerinfo import info_from_p2p_addr

    for i, a in enumerate(dhts):
        for b in dhts[i + 1 :]:
            await a.host.connect(info_from_p2p_addr(b.host.get_addrs()[0]))
            with trio.fail_after(10):  # identify must have run before add_peer accepts the peer
                while not await a.add_peer(b.host.get_id()):
                    await trio.sleep(0.05)
                while not await b.add_peer(a.host.get_id()):
                    await trio.sleep(0.05)


async def _drain(recv: trio.MemoryReceiveChannel[tuple[bytes, bytes]]) -> None:
    async for _ in recv:
        pass
