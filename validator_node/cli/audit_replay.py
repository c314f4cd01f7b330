"""`validator-node audit replay` and `audit export`: audit an epoch from public data, or write
that data to a folder.

    validator-node audit replay --epoch N --genesis-hash HEX --from-dht MULTIADDR --netuid U
        [--chain CHAIN.sqlite] [--rerun-evaluations] [--json] [--verbose]
    validator-node audit export --from H --to H2 DIR (--from-api URL | --from-dht ADDR --netuid U | ...)

Sources (exactly one): `--from-dht` (the Kademlia DHT, through any peer), `--from-api` (any
node's HTTP API), `--from-export` (a folder `audit export` wrote), `--store` (a node's data folder,
read only). Exit codes: 0 every check held; 1 a check failed (each failure is one line); 2 the
audit could not be carried out (missing input, unreadable source).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from validator_node.audit.report import INCOMPLETE


def register(sub: Any) -> None:
    """Add `replay` and `export` to the `audit` command's subparsers."""
    p = sub.add_parser("replay", help="re-derive an epoch's weights from public data and check everything")
    _sources(p)
    p.add_argument("--epoch", type=int, required=True, help="the app epoch to audit")
    p.add_argument("--chain", help="a local chain database whose set_weights records to check")
    p.add_argument("--rerun-evaluations", action="store_true", help="run every evaluation again in a sandbox")
    p.add_argument(
        "--work-dir", help="where the sandbox caches compiled modules (default: a temporary folder)"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--verbose", action="store_true", help="print every check, not only the failures")
    p.set_defaults(func=cmd_replay)

    e = sub.add_parser(
        "export", help="write decided blocks, certificates, genesis, modules and payloads to DIR"
    )
    _sources(e)
    e.add_argument("--from", dest="first", type=int, default=1, help="first height (default 1)")
    e.add_argument("--to", dest="last", type=int, required=True, help="last height")
    e.add_argument("dir", help="an empty or new folder")
    e.set_defaults(func=cmd_export)


def _sources(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--from-dht", metavar="MULTIADDR", help="join the DHT through this peer (/ip4/.../p2p/<id>)"
    )
    g.add_argument("--from-api", metavar="URL", help="a node's API, e.g. http://127.0.0.1:8081")
    g.add_argument("--from-export", metavar="DIR", help="a folder `audit export` wrote")
    g.add_argument("--store", metavar="DATA_DIR", help="a node's data folder (read only)")
    p.add_argument("--genesis-hash", help="the network's genesis hash (64 hex): the audit's trust root")
    p.add_argument("--netuid", type=int, help="the subnet (needed with --from-dht)")


@asynccontextmanager
async def _open_source(args: argparse.Namespace) -> AsyncIterator[Any]:
    from validator_node.audit.sources import ApiSource, DhtSource, ExportSource, SourceError, StoreSource

    if args.from_dht:
        if args.netuid is None:
            raise SourceError("--from-dht needs --netuid")
        async with DhtSource.joined(args.from_dht, args.netuid) as src:
            yield src
    elif args.from_api:
        yield ApiSource(args.from_api)
    elif args.from_export:
        if not (Path(args.from_export) / "genesis.cbor").exists():
            raise SourceError(f"{args.from_export} is not an audit export (no genesis.cbor)")
        yield ExportSource(Path(args.from_export))
    else:
        store = StoreSource(Path(args.store))
        try:
            yield store
        finally:
            store.close()


def _pin(args: argparse.Namespace) -> bytes | None:
    from validator_node.genesis import parse_hash

    return None if args.genesis_hash is None else parse_hash(args.genesis_hash)


def cmd_replay(args: argparse.Namespace) -> int:
    from validator_node.audit.chain_records import local_chain_records
    from validator_node.audit.replay import Replayer
    from validator_node.audit.sources import SourceError
    from validator_node.genesis import GenesisError

    try:
        pin = _pin(args)
        records = None if args.chain is None else local_chain_records(Path(args.chain))
    except (GenesisError, OSError) as exc:
        print(f"validator-node audit: {exc}", file=sys.stderr)
        return INCOMPLETE

    async def main(work: Path) -> Any:
        async with _open_source(args) as src:
            return await Replayer(
                src,
                epoch=args.epoch,
                genesis_hash=pin,
                work_dir=work,
                rerun_evaluations=args.rerun_evaluations,
                chain_records=records,
            ).run()

    try:
        with tempfile.TemporaryDirectory(prefix="audit-") as tmp:
            report = trio.run(main, Path(args.work_dir) if args.work_dir else Path(tmp))
    except SourceError as exc:
        print(f"validator-node audit: {exc}", file=sys.stderr)
        return INCOMPLETE
    if (
        args.netuid is not None
        and report.checks
        and report.checks[0].figures.get("netuid") not in (None, args.netuid)
    ):
        report.add("netuid", False, f"the genesis record is for netuid {report.checks[0].figures['netuid']}")
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
        return report.exit_code
    for check in report.checks:
        if args.verbose or not check.ok:
            print(check.line())
    heights = sum(1 for c in report.checks if c.item.startswith("height "))
    verdict = {0: "ok", 1: "FAIL", 2: "INCOMPLETE"}[report.exit_code]
    print(
        f"{verdict}: epoch {args.epoch} from {report.source}: {len(report.checks)} checks, "
        f"{len(report.failures)} failed; {heights} heights replayed"
        + (f"; stopped at {report.incomplete}" if report.incomplete else "")
    )
    return report.exit_code


def cmd_export(args: argparse.Namespace) -> int:
    from validator_node.audit.export import ExportError, export
    from validator_node.audit.sources import SourceError
    from validator_node.genesis import GenesisError

    if args.first < 1 or args.last < args.first:
        print("validator-node audit: --from must be >= 1 and --to >= --from", file=sys.stderr)
        return INCOMPLETE

    async def main() -> dict[str, Any]:
        async with _open_source(args) as src:
            return await export(src, Path(args.dir), args.first, args.last, _pin(args))

    try:
        manifest = trio.run(main)
    except (ExportError, SourceError, GenesisError, OSError) as exc:
        print(f"validator-node audit: {exc}", file=sys.stderr)
        return INCOMPLETE
    print(
        f"exported heights {manifest['from']}..{manifest['to']} of netuid {manifest['netuid']} "
        f"(genesis {manifest['genesis_hash']}) to {args.dir}: {len(manifest['files'])} files"
        + (f", {len(manifest['missing'])} payloads not served" if manifest["missing"] else "")
    )
    return 0
