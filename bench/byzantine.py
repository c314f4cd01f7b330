"""A Byzantine validator for adversary runs: it holds a real validator's keys, links with the
others over the real consensus protocol, never votes, and replays what costs them most.

Every message it sends is validly signed by a member of the consensus set, so nothing can refuse
it at the handshake; what bounds its cost is dedup before verification, the per-recipient send
budget of `consensus/send_budget.py` and the per-peer link budgets of the transport. It sends,
to every linked validator, `--rate` times a second each:

* one signed `SyncRequest` for height 1, the same envelope every time (on 1be342a each copy made
  the recipient queue every decided block on our link);
* one signed `ViewChange` for the height the network is deciding, the same envelope every time
  (replays of a statement already counted);
* a fresh signed `ViewChange` for an old, decided height (a validator "stuck" there asks to be
  helped: the recipient answers with decided blocks, within its budget).

Used by `bench/bench_adversary.py` and `tests/node/test_adversary.py`:

    python -m bench.byzantine --root DEVNET --wallet validator0 --port P --bootstrap ADDR,ADDR \
        --rate 50 --seconds 60
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from consensus.crypto import seal
from consensus.messages import (
    DecisionPacket,
    PrePrepare,
    ProposalPacket,
    SyncPacket,
    SyncRequest,
    ViewChange,
    ViewChangePacket,
)
from validator_node import devnet
from validator_node.chain.local import LocalChain
from validator_node.metrics import Metrics
from validator_node.p2p.host import ConsensusTransport, load_or_create_peer_seed
from wire.codec import decode, decode_any, encode
from wire.keys import Hotkey, public_key_of

CONSENSUS = b"\x00"
PACKETS = (ProposalPacket, DecisionPacket, ViewChangePacket, SyncPacket)


class Replayer:
    def __init__(self, root: Path, wallet: str, port: int, bootstrap: list[str], rate: float) -> None:
        self.bootstrap = bootstrap
        self.hotkey = Hotkey.from_wallet(wallet, "default", root / "wallets")
        self.chain = LocalChain(root / "chain.sqlite")
        permitted = frozenset(
            public_key_of(n.hotkey) for n in self.chain.metagraph().neurons if n.validator_permit
        )
        self.rate = rate
        self.height = 1  # the highest height seen in a proposal or decision
        self.sent = 0
        self.received = 0
        self.inbound_send, self.inbound = trio.open_memory_channel[tuple[bytes, bytes]](1024)
        self.transport = ConsensusTransport(
            hotkey=self.hotkey,
            netuid=devnet.NETUID,
            peer_seed=load_or_create_peer_seed(root / "data" / str(devnet.NETUID) / self.hotkey.ss58),
            listen_host="127.0.0.1",
            listen_port=port,
            permitted=lambda: permitted,
            current_block=self.chain.current_block,
            metrics=Metrics(),
            inbound=self.inbound_send,
        )
        self.sync = CONSENSUS + encode(SyncPacket(seal(SyncRequest(1), self.hotkey, devnet.NETUID)))
        self._stuck: tuple[int, bytes] | None = None

    def _current_view_change(self) -> bytes:
        """One envelope per height: its copies are replays of a statement already counted."""
        if self._stuck is None or self._stuck[0] != self.height:
            env = seal(ViewChange(self.height, 1, None, None), self.hotkey, devnet.NETUID)
            self._stuck = (self.height, CONSENSUS + encode(ViewChangePacket(env, None, None)))
        return self._stuck[1]

    def _old_view_change(self, n: int) -> bytes:
        old = 1 + n % max(1, self.height - 2)
        env = seal(ViewChange(old, 1 + n // 1000, None, None), self.hotkey, devnet.NETUID)
        return CONSENSUS + encode(ViewChangePacket(env, None, None))

    async def _listen(self) -> None:
        async for _, data in self.inbound:
            self.received += 1
            if data[:1] != CONSENSUS:
                continue
            try:
                pkt = decode_any(data[1:], PACKETS)
            except Exception:
                continue
            if isinstance(pkt, ProposalPacket):
                self.height = max(self.height, decode(pkt.pre_prepare.body, PrePrepare).height)
            elif isinstance(pkt, DecisionPacket):
                self.height = max(self.height, pkt.certificate.height + 1)

    async def _flood(self, seconds: float) -> None:
        n = 0
        with trio.move_on_after(seconds):
            while True:
                for hk in self.transport.book.hotkeys():
                    for data in (self.sync, self._current_view_change(), self._old_view_change(n)):
                        self.transport.send(hk, data)
                        self.sent += 1
                n += 1
                await trio.sleep(1 / self.rate)

    async def run(self, seconds: float) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run, self.bootstrap)
            nursery.start_soon(self._listen)
            with trio.move_on_after(30):
                while len(self.transport.book.links) < len(self.bootstrap):
                    await trio.sleep(0.2)
            print(f"byzantine: linked with {len(self.transport.book.links)} validators", flush=True)
            await self._flood(seconds)
            print(
                f"byzantine: sent {self.sent} replayed frames, received {self.received},"
                f" height {self.height}",
                flush=True,
            )
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="the devnet folder")
    ap.add_argument("--wallet", default="validator0", help="whose keys to use (not running as a node)")
    ap.add_argument("--port", type=int, required=True, help="the validator's p2p port")
    ap.add_argument("--bootstrap", required=True, help="the other validators' multiaddrs, comma-separated")
    ap.add_argument("--rate", type=float, default=50.0, help="rounds of replays a second")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    replayer = Replayer(args.root, args.wallet, args.port, args.bootstrap.split(","), args.rate)
    try:
        trio.run(replayer.run, args.seconds)
    finally:
        replayer.chain.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
