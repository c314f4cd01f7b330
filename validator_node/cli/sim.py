"""`validator-node sim ...`: the consensus simulator, same flags as `python -m consensus.sim`."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from consensus.sim.__main__ import add_arguments, run_from_args

    add_arguments(parser)
    parser.set_defaults(func=run_from_args)
