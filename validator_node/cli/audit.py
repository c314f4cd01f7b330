"""`validator-node audit verify`: check the hash chain of the evaluation audit log.

Output contract: `ok: N records, head <hash>` (exit 0), or
`broken: record <seq> (line <n>): <reason>; N good records before it` (exit 1); exit 2 when the log
cannot be read. `--json` prints one object {ok, records, head, broken_line, broken_seq, reason}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    p = sub.add_parser("verify", help="verify the hash chain and name the first broken record")
    p.add_argument("--data-dir", default="data", help="node data directory (default: data)")
    p.add_argument("--file", help="audit log file (default: DATA_DIR/audit/audit.log)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from runtime.audit import default_path, verify

    path = Path(args.file) if args.file else default_path(args.data_dir)
    try:
        report = verify(path)
    except OSError as exc:
        print(f"validator-node audit: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "head": report.head,
                    "broken_line": report.broken_line,
                    "broken_seq": report.broken_seq,
                    "reason": report.reason or None,
                }
            )
        )
    elif report.ok:
        print(f"ok: {report.records} records, head {report.head}")
    else:
        seq = report.broken_seq if report.broken_seq is not None else "?"
        print(
            f"broken: record {seq} (line {report.broken_line}): {report.reason}; "
            f"{report.records} good records before it"
        )
    return 0 if report.ok else 1
