"""`validator-node devnet`: the main job; N validator processes over libp2p on the local chain."""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

# a sandbox's epochs must leave a person time to sign, publish and submit by hand (`miner submit`
# takes ~2.5 s; a 7.5 s epoch of 0.5 s blocks did not)
SANDBOX_EPOCH_BLOCKS, SANDBOX_BLOCK_INTERVAL = 60, 1.0
RUN_EPOCH_BLOCKS, RUN_BLOCK_INTERVAL = 12, 0.5


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--validators", type=int, default=4, help="validator processes (unequal stake)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to run (weights are set at each end)")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="run until Ctrl-C, as a sandbox for the subnet owner: prints the validators' addresses, the "
        f"owner key, the next free registry nonce and the free emission share; {SANDBOX_EPOCH_BLOCKS}-block "
        f"epochs of {SANDBOX_BLOCK_INTERVAL:g} s unless given",
    )
    parser.add_argument(
        "--owner-key",
        help="make this key (a hex seed file from `registry keygen`) the subnet owner instead of the "
        "folder's own owner wallet; the secret is read, never copied into the folder",
    )
    parser.add_argument(
        "--epoch-blocks",
        type=int,
        default=None,
        help=f"decided blocks per epoch (default {RUN_EPOCH_BLOCKS}; {SANDBOX_EPOCH_BLOCKS} with "
        "--keep-running)",
    )
    parser.add_argument(
        "--block-interval",
        type=float,
        default=None,
        help=f"seconds between blocks (default {RUN_BLOCK_INTERVAL:g}; {SANDBOX_BLOCK_INTERVAL:g} with "
        "--keep-running)",
    )
    parser.add_argument("--miners", type=int, default=6, help="simulated miners")
    parser.add_argument("--dir", default=None, help="devnet folder (default: data/devnet-<time>)")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.set_defaults(func=run_command)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_command(args: argparse.Namespace) -> int:
    from validator_node import devnet

    if args.epoch_blocks is None:
        args.epoch_blocks = SANDBOX_EPOCH_BLOCKS if args.keep_running else RUN_EPOCH_BLOCKS
    if args.block_interval is None:
        args.block_interval = SANDBOX_BLOCK_INTERVAL if args.keep_running else RUN_BLOCK_INTERVAL
    if not 1 <= args.validators <= 16:
        print("devnet: --validators must be between 1 and 16 on one machine")
        return 2
    if args.epochs < 1 or args.epoch_blocks < 4 or args.block_interval < 0:
        print("devnet: need --epochs >= 1, --epoch-blocks >= 4 and --block-interval >= 0")
        return 2
    owner = None
    if args.owner_key:
        from validator_node.cli.registry import CliError, load_key

        try:
            owner = load_key(argparse.Namespace(key=args.owner_key, wallet_name=None, dev_key=None))
        except CliError as exc:
            print(f"devnet: {exc}")
            return 2
    root = Path(args.dir or f"data/devnet-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` of a devnet must still stop its validators
    if not args.json:
        length = "until Ctrl-C" if args.keep_running else f"{args.epochs} epochs"
        print(
            f"devnet: {args.validators} validators, {args.miners} miners, {length} of "
            f"{args.epoch_blocks} blocks of {args.block_interval:g} s, folder {root}"
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
            keep_running=args.keep_running,
            owner=owner,
            owner_source=f"--key {args.owner_key}" if args.owner_key else "",
            block_interval=args.block_interval,
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
    print("validators (address for `registry publish` / `miner submit`, and dashboard while running):")
    for v in summary["validators"]:
        print(f"  {v['multiaddr']}  {v['dashboard']}")
    print(f"subnet owner: {summary['owner']}")
    return 0 if summary["identical"] and summary["scores_identical"] else 1
