"""`validator-node devnet`: the main job; N validator processes over libp2p on the local chain."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validators", type=int, default=4, help="validator processes (unequal stake)")
    parser.add_argument("--heights", type=int, default=10, help="stop once every validator decided this many")
    parser.add_argument("--dir", default=None, help="devnet folder (default: data/devnet-<time>)")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from validator_node import devnet

    if not 1 <= args.validators <= 16:
        print("devnet: --validators must be between 1 and 16 on one machine")
        return 2
    root = Path(args.dir or f"data/devnet-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    if not args.json:
        print(f"devnet: {args.validators} validators, {args.heights} heights, folder {root}")
    summary = devnet.run(root, args.validators, args.heights, args.timeout, quiet=args.json)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print()
        print(f"decided heights (common to all): {summary['decided_heights']} in {summary['elapsed_s']} s")
        for v in summary["validators"]:
            print(f"  validator{v['index']} {v['hotkey']}  decided {v['decided']}")
        verdict = "IDENTICAL on every validator" if summary["identical"] else "NOT identical"
        print(f"decided chain: {verdict}; tip {summary['tip']}")
        print(f"stores: {root}/data/<netuid>/<hotkey>/node.sqlite   logs: {summary['logs']}")
    return 0 if summary["identical"] else 1
