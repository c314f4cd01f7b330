"""`validator-node devnet`: the main job; N validator processes over libp2p on the local chain."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validators", type=int, default=4, help="validator processes (unequal stake)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to run (weights are set at each end)")
    parser.add_argument("--epoch-blocks", type=int, default=12, help="decided blocks per epoch")
    parser.add_argument("--miners", type=int, default=6, help="simulated miners")
    parser.add_argument("--dir", default=None, help="devnet folder (default: data/devnet-<time>)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from validator_node import devnet

    if not 1 <= args.validators <= 16:
        print("devnet: --validators must be between 1 and 16 on one machine")
        return 2
    if args.epochs < 1 or args.epoch_blocks < 4:
        print("devnet: need --epochs >= 1 and --epoch-blocks >= 4")
        return 2
    root = Path(args.dir or f"data/devnet-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    if not args.json:
        print(
            f"devnet: {args.validators} validators, {args.miners} miners, {args.epochs} epochs of "
            f"{args.epoch_blocks} blocks, folder {root}"
        )
    try:
        summary = devnet.run(
            root,
            args.validators,
            args.epochs,
            args.timeout,
            quiet=args.json,
            epoch_blocks=args.epoch_blocks,
            miners=args.miners,
        )
    except KeyboardInterrupt:
        print("devnet: interrupted; validators stopped")
        return 130
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0 if summary["identical"] and summary["scores_identical"] else 1
    print()
    print(
        f"decided heights (common to all): {summary['decided_heights']} in {summary['elapsed_s']} s; "
        f"decided chains identical: {summary['chain_identical']}"
    )
    refused = len(summary["submissions_refused"])
    print(f"miner submissions admitted: {summary['submissions_sent']}; refused: {refused}")
    for e in summary["epochs"]:
        verdict = "identical" if e["identical"] else "NOT IDENTICAL"
        print(f"epoch {e['epoch']}: weights {verdict} across {len(e['weights'])} validators")
        for hotkey, vector in e["weights"].items():
            print(f"  {hotkey[:12]}..  {vector}")
    last = summary["last_epoch_scores"]
    if summary["scores_identical"] and last:
        print(f"epoch {last['epoch']} scores per challenge (uid: score, 1e9 = 1.0), same on every validator:")
        for cid, per in sorted(last["scores"].items()):
            ordered = {uid: per[uid] for uid in sorted(per, key=int)}
            print(f"  {cid:22} {ordered or '(nothing scored: share burnt)'}")
    else:
        print("per-challenge scores of the last epoch DIFFER between validators (see --json)")
    print(f"set_weights calls accepted by the local chain: {summary['chain_accepted_set_weights']}")
    print(f"stores (blocks, certificates, checkpoints) and audit logs: {root}/data/<netuid>/<hotkey>/")
    print(f"logs: {summary['logs']}")
    print(f"dashboards (while running): {', '.join(v['dashboard'] for v in summary['validators'])}")
    return 0 if summary["identical"] and summary["scores_identical"] else 1
