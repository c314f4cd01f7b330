"""The outsider of adversary runs, as its own process: floods a validator from several free peer
ids (checkpoint pulls, 16 MiB junk frames, forged registry items) for `--seconds`, then prints
what it was answered as one JSON object on the last line.

A separate process, like the Byzantine replayer (`bench/byzantine.py`): an attacker is another
party, so nothing it leaves behind (a py-libp2p client host cancelled mid-dial at the end of the
attack can leave a socket to the garbage collector, which once failed a CI run's adversary test
through its ResourceWarning) reaches the process that measures the validators.

    python -m bench.outsider --root DEVNET --addr /ip4/.../p2p/... --seconds 20 --forged 16
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import trio

from bench.bench_adversary import flood, forged_items


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the devnet folder (its owner wallet names the forgeries)")
    p.add_argument("--addr", required=True, help="the target validator's multiaddr")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--forged", type=int, default=16, help="distinct forged registry items")
    args = p.parse_args(argv)
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore", ResourceWarning)  # the attacker's own hygiene is not measured
    counts: dict[str, int] = {}
    trio.run(flood, args.addr, args.seconds, counts, forged_items(Path(args.root), args.forged))
    print(json.dumps(counts, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
