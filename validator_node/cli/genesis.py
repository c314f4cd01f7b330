"""`validator-node genesis`: create a network's genesis record once, and show a record's hash.

A new network's genesis is read from the chain once (`create`) and handed to every validator as a
file (`run --genesis FILE`) or pinned by hash (`run --genesis-hash`); see validator_node.genesis.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("create", help="read the genesis from the chain now and write the record file")
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--epoch-blocks", type=int, required=True, help="decided blocks per epoch")
    p.add_argument("--subtensor.network", dest="network", default="local")
    p.add_argument("--chain.path", dest="chain_path", default=None, help="local chain database")
    p.add_argument("--out", required=True, help="where to write the record (refuses to overwrite)")
    p.add_argument(
        "--validators-as-miners",
        action="store_true",
        help="pay hotkeys holding a validator permit for their miner scores too (default: they earn"
        " no miner weight); fixed for the network's life",
    )
    p.set_defaults(func=cmd_create)
    p = sub.add_parser("show", help="print a record file's hash and fields")
    p.add_argument("file")
    p.set_defaults(func=cmd_show)


def cmd_create(args: argparse.Namespace) -> int:
    from validator_node.cli.run import open_chain
    from validator_node.genesis import GenesisError, record_from_chain, save

    out = Path(args.out)
    if out.exists():
        print(f"validator-node genesis: {out} exists; a genesis is created once", file=sys.stderr)
        return 2
    opts = {"subtensor.network": args.network, "chain.path": args.chain_path, "chain.genesis": None}
    opts["netuid"] = args.netuid
    try:
        chain = open_chain(opts, Path("data"))
        record = record_from_chain(
            chain, args.netuid, args.epoch_blocks, validators_as_miners=args.validators_as_miners
        )
    except (GenesisError, OSError, RuntimeError) as exc:
        print(f"validator-node genesis: {exc}", file=sys.stderr)
        return 2
    print(save(record, out).hex())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from validator_node.genesis import GenesisError, genesis_hash, load

    try:
        r = load(Path(args.file))
    except GenesisError as exc:
        print(f"validator-node genesis: {exc}", file=sys.stderr)
        return 2
    doc = {
        "hash": genesis_hash(r).hex(),
        "netuid": r.netuid,
        "epoch_blocks": r.epoch_blocks,
        "chain_block": r.chain_block,
        "owner": r.owner.hex(),
        "mechanism_count": r.mechanism_count,
        "validators": [[v.hotkey.hex(), v.stake] for v in r.validators],
        "neurons": len(r.chain_view.neurons),
        "validators_as_miners": r.validators_as_miners,
    }
    print(json.dumps(doc, indent=2))
    return 0
