"""`validator-node chain ...`: the embedded local chain (genesis, status, recorded weights).

genesis --out FILE         a devnet genesis: an owner at uid 0, N validators, M miners (dev keys)
info --chain DB            block, epoch, owner, hyperparameters and the metagraph
weights --chain DB         every accepted set_weights (optionally --epoch N / --hotkey SS58)
advance --chain DB N       move the chain N blocks forward (for every process sharing it)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

DEFAULT_CHAIN = "data/local-chain.sqlite"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="chain_command", metavar="SUBCOMMAND")

    p = sub.add_parser("genesis", help="write a devnet genesis file (JSON)")
    p.add_argument("--out", required=True)
    p.add_argument("--netuid", type=int, default=1)
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--miners", type=int, default=8)
    p.add_argument("--stake", type=int, default=1000 * 10**9, help="validator stake, rao")
    p.add_argument("--block-time-ms", type=int, default=12_000)
    p.add_argument("--tempo", type=int, default=360)
    p.add_argument("--rate-limit", type=int, default=100)
    p.add_argument("--owner", help="owner hotkey ss58 (default: the dev key 'owner')")
    p.set_defaults(func=cmd_genesis)

    for name, fn, text in (
        ("info", cmd_info, "show the chain's state"),
        ("weights", cmd_weights, "show recorded set_weights calls"),
        ("advance", cmd_advance, "advance the chain by N blocks"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--chain", default=DEFAULT_CHAIN, help=f"chain database (default {DEFAULT_CHAIN})")
        p.add_argument("--genesis", help="genesis file, to create the chain database if it does not exist")
        if name == "weights":
            p.add_argument("--epoch", type=int)
            p.add_argument("--hotkey")
            p.add_argument("--json", action="store_true", help="one JSON object per line")
        if name == "advance":
            p.add_argument("blocks", type=int)
        p.set_defaults(func=fn)


def _open(args: argparse.Namespace) -> Any:
    from validator_node.chain.base import ChainError
    from validator_node.chain.local import Genesis, LocalChain

    path = Path(args.chain)
    try:
        genesis = Genesis.load(args.genesis) if args.genesis else None
        if genesis is None and not path.exists():
            raise ChainError(f"no chain at {path} (give --genesis FILE to create one)")
        return LocalChain(path, genesis)
    except (ChainError, OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_genesis(args: argparse.Namespace) -> int:
    from validator_node.chain.base import Hyperparameters
    from validator_node.chain.local import Genesis, GenesisNeuron
    from wire.keys import Hotkey

    owner = args.owner or Hotkey.from_name("owner").ss58
    neurons = [GenesisNeuron(owner, args.stake, True)]
    neurons += [
        GenesisNeuron(Hotkey.from_name(f"validator-{i}").ss58, args.stake, True)
        for i in range(args.validators)
    ]
    neurons += [GenesisNeuron(Hotkey.from_name(f"miner-{i}").ss58, 0, False) for i in range(args.miners)]
    g = Genesis(
        netuid=args.netuid,
        owner=owner,
        neurons=tuple(neurons),
        hyperparameters=Hyperparameters(tempo=args.tempo, weights_rate_limit=args.rate_limit),
        block_time_ms=args.block_time_ms,
    )
    Path(args.out).write_text(json.dumps(g.to_dict(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}: netuid {args.netuid}, owner uid 0, {args.validators} validators "
          f"(dev keys validator-0..), {args.miners} miners")  # fmt: skip
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    chain = _open(args)
    if chain is None:
        return 2
    with chain:
        mg, hp = chain.metagraph(), chain.hyperparameters()
        block = chain.current_block()
        print(f"netuid {chain.netuid}  block {block}  epoch {hp.epoch_of(block, chain.netuid)}  "
              f"owner {chain.subnet_owner()}")  # fmt: skip
        print("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in asdict(hp).items()))
        for n in mg.neurons:
            print(f"  uid {n.uid:3d}  {n.hotkey}  stake {n.stake}  {'permit' if n.validator_permit else ''}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    chain = _open(args)
    if chain is None:
        return 2
    with chain:
        records = chain.weight_records(epoch=args.epoch, hotkey=args.hotkey)
    for r in records:
        if args.json:
            print(json.dumps({**asdict(r), "signature": r.signature.hex()}, sort_keys=True))
        else:
            pairs = " ".join(f"{u}:{w}" for u, w in zip(r.uids, r.stored, strict=True))
            state = "" if r.revealed else f" (commit, reveals at {r.reveal_block})"
            print(f"block {r.block} epoch {r.epoch} uid {r.uid} mech {r.mechid}{state}: {pairs}")
    if not args.json:
        distinct = {(r.mechid, r.uids, r.stored) for r in records}
        print(f"{len(records)} submissions from {len({r.hotkey for r in records})} hotkeys, "
              f"{len(distinct)} distinct vectors")  # fmt: skip
    return 0


def cmd_advance(args: argparse.Namespace) -> int:
    chain = _open(args)
    if chain is None:
        return 2
    with chain:
        print(f"block {chain.advance(args.blocks)}")
    return 0
