"""`validator-node miner submit`: sign a payload with a miner hotkey and hand it to a validator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wire.keys import Hotkey


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="miner_command", metavar="COMMAND")
    p = sub.add_parser("submit", help="submit a payload for a challenge")
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--challenge", required=True, help="challenge id")
    p.add_argument("--file", required=True, help="payload file")
    p.add_argument("--epoch", type=int, required=True, help="the epoch the submission is for")
    p.add_argument("--nonce", type=int, default=0, help="distinguishes resubmissions of one payload")
    p.add_argument("--validator", required=True, help="validator address /ip4/.../tcp/.../p2p/...")
    p.add_argument("--wallet.name", dest="wallet_name", default="default")
    p.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default")
    p.add_argument("--wallet.path", dest="wallet_path", default="~/.bittensor/wallets")
    p.set_defaults(func=submit_command)


def submit_command(args: argparse.Namespace) -> int:
    import trio

    from validator_node.p2p.submit_client import submit_items
    from wire.keys import Hotkey

    try:
        payload = Path(args.file).read_bytes()
    except OSError as exc:
        print(
            f"miner submit: cannot read the payload file {args.file}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    try:
        hotkey = Hotkey.from_wallet(args.wallet_name, args.wallet_hotkey, args.wallet_path)
    except Exception as exc:  # a missing or unreadable key file: bittensor's message names it
        print(
            f"miner submit: cannot load hotkey {args.wallet_name}/{args.wallet_hotkey}: {exc}",
            file=sys.stderr,
        )
        return 2
    try:
        item = submission_item(payload, args.challenge, args.epoch, args.nonce, args.netuid, hotkey)
    except ValueError as exc:
        print(f"miner submit: {exc}", file=sys.stderr)
        return 2
    try:
        (reply,) = trio.run(submit_items, args.validator, [item])
    except Exception as exc:
        print(f"miner submit: could not reach {args.validator}: {exc}", file=sys.stderr)
        return 1
    print(reply)
    from validator_node.p2p.submit_replies import accepted

    return 0 if accepted(reply) else 1


def submission_item(
    payload: bytes, challenge: str, epoch: int, nonce: int, netuid: int, hotkey: Hotkey
) -> bytes:
    """The encoded item for the submit protocol: the signed submission, inline up to 256 KiB;
    above that, signed with a `payload_ref` and sent together with the bytes."""
    import hashlib

    from validator_node.pipeline.messages import (
        MAX_INLINE_PAYLOAD,
        MAX_REF_PAYLOAD,
        LargeSubmission,
        PayloadRef,
        Submission,
    )
    from wire.codec import encode
    from wire.envelope import seal

    if len(payload) > MAX_REF_PAYLOAD:
        raise ValueError(f"payload is {len(payload)} bytes; the cap is {MAX_REF_PAYLOAD}")
    if len(payload) <= MAX_INLINE_PAYLOAD:
        return encode(seal(Submission(challenge, epoch, nonce, payload), hotkey, netuid))
    from validator_node.payloads import dht_key_of

    ref = PayloadRef(hashlib.sha256(payload).digest(), len(payload), dht_key_of(payload))
    env = seal(Submission(challenge, epoch, nonce, b"", ref), hotkey, netuid)
    return encode(LargeSubmission(env, payload))
