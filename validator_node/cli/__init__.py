"""`validator-node` command line: one entry point, one module per command group.

Each command group lives in its own module exposing ``register(subparsers)``; the module is
imported lazily only when needed so `validator-node --help` stays fast (libp2p and bittensor take
most of a second to import).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (command name, module path, one-line help). Each module defines `register(parser)` which adds
# its arguments/sub-commands to `parser` and sets `func` defaults returning an exit code.
COMMAND_GROUPS: list[tuple[str, str, str]] = [
    ("run", "validator_node.cli.run", "run a validator node"),
    ("devnet", "validator_node.cli.devnet", "run a local devnet of validator processes (the main job)"),
    ("miner", "validator_node.cli.miner", "miners: submit a signed payload to a validator"),
    ("sim", "validator_node.cli.sim", "run the deterministic consensus simulator"),
    ("challenge", "validator_node.cli.challenge", "challenge authors: new, build, inspect, test"),
    ("audit", "validator_node.cli.audit", "audit an epoch from public data; verify and sign the audit log"),
    ("registry", "validator_node.cli.registry", "sudo owner: keygen, sign, verify, list, command, publish"),
    ("genesis", "validator_node.cli.genesis", "a network's genesis record: create once, show its hash"),
    ("chain", "validator_node.cli.chain", "the embedded local chain: genesis, info, recorded weights"),
]


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("platform-validator")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="validator-node", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMAND_GROUPS:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass finds the command group; the group's module then defines its own arguments.
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"validator-node {package_version()}")
        return 0
    names = {name: module for name, module, _ in COMMAND_GROUPS}
    if argv[0] not in names:
        parser.print_usage(sys.stderr)
        print(f"validator-node: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    group = argparse.ArgumentParser(prog=f"validator-node {argv[0]}")
    importlib.import_module(names[argv[0]]).register(group)
    args = group.parse_args(argv[1:])
    func = getattr(args, "func", None)
    if func is None:
        group.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C before a command's own handling of it: no traceback
        print(f"validator-node {argv[0]}: interrupted", file=sys.stderr)
        return 130
