"""`validator-node audit verify | sign`: check the evaluation audit log, and sign its head.

`verify` output contract: `ok: N records, head <hash>` (exit 0), or
`broken: record <seq> (line <n>): <reason>; N good records before it` (exit 1); exit 2 when the log
cannot be read. With a signed head (`--head FILE`, by default `audit.head.json` beside the log when
it exists) a second line follows: `signed: N records by <ss58> (netuid U), head <hash>`, or
`bad signed head: <reason>` (exit 1, as for a broken log); exit 2 when the head file cannot be read
or is not a head statement. `--signer SS58` also requires the head to be that hotkey's.
`--json` prints one object {ok, records, head, broken_line, broken_seq, reason, signed}, `signed`
being null or {ok, hotkey, netuid, records, head, reason}.

`sign` checks the whole chain, signs its head (record count and last hash) with a hotkey and writes
`audit.head.json` beside the log (`--out` elsewhere); it refuses a broken log (exit 1). A running
node refreshes that file itself at each epoch start and when it stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from validator_node.cli.registry import CliError, add_key_arguments, load_key

if TYPE_CHECKING:
    from runtime.audit_head import HeadReport


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    _add_verify(sub)
    _add_sign(sub)
    from validator_node.cli import audit_replay

    audit_replay.register(sub)


def _add_log_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="data", help="node data directory (default: data)")
    p.add_argument("--file", help="audit log file (default: DATA_DIR/audit/audit.log)")


def _add_verify(sub: Any) -> None:
    p = sub.add_parser(
        "verify", help="verify the hash chain (and the signed head) and name the first broken record"
    )
    _add_log_arguments(p)
    p.add_argument("--head", help="signed head file (default: audit.head.json beside the log, if it exists)")
    p.add_argument("--signer", help="require the head to be signed by this hotkey (ss58)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)


def _add_sign(sub: Any) -> None:
    p = sub.add_parser("sign", help="sign the log's head with a hotkey (writes audit.head.json)")
    _add_log_arguments(p)
    p.add_argument("--netuid", type=int, required=True, help="the subnet the log's evaluations were for")
    p.add_argument("--out", help="statement file (default: audit.head.json beside the log)")
    add_key_arguments(p)
    p.set_defaults(func=cmd_sign)


def _log_path(args: argparse.Namespace) -> Path:
    from runtime.audit import default_path

    return Path(args.file) if args.file else default_path(args.data_dir)


def _fail(message: str) -> int:
    print(f"validator-node audit: {message}", file=sys.stderr)
    return 2


def cmd_verify(args: argparse.Namespace) -> int:
    from runtime import audit_head
    from runtime.audit import verify
    from wire.errors import WireError
    from wire.keys import public_key_of

    path = _log_path(args)
    try:
        signer = public_key_of(args.signer) if args.signer else None
    except WireError as exc:
        return _fail(str(exc))
    try:
        report = verify(path)
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror or exc}")
    head_file = Path(args.head) if args.head else audit_head.head_path(path)
    signed: HeadReport | None = None
    if args.head or head_file.exists() or signer is not None:
        try:
            signed = audit_head.check(audit_head.read(head_file), path, signer)
        except OSError as exc:
            return _fail(f"cannot read {head_file}: {exc.strerror or exc}")
        except audit_head.HeadError as exc:
            return _fail(f"{head_file}: {exc}")
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
                    "signed": None if signed is None else _signed_json(signed),
                }
            )
        )
    else:
        if report.ok:
            print(f"ok: {report.records} records, head {report.head}")
        else:
            seq = report.broken_seq if report.broken_seq is not None else "?"
            print(
                f"broken: record {seq} (line {report.broken_line}): {report.reason}; "
                f"{report.records} good records before it"
            )
        if signed is not None:
            st = signed.statement
            if signed.ok:
                print(f"signed: {st.records} records by {st.ss58} (netuid {st.netuid}), head {st.head.hex()}")
            else:
                print(f"bad signed head: {signed.reason}")
    return 0 if report.ok and (signed is None or signed.ok) else 1


def _signed_json(signed: HeadReport) -> dict[str, Any]:
    st = signed.statement
    return {
        "ok": signed.ok,
        "hotkey": st.ss58,
        "netuid": st.netuid,
        "records": st.records,
        "head": st.head.hex(),
        "reason": signed.reason or None,
    }


def cmd_sign(args: argparse.Namespace) -> int:
    from runtime import audit_head

    path = _log_path(args)
    if not 0 <= args.netuid < 1 << 16:
        return _fail(f"--netuid {args.netuid} out of range")
    try:
        key = load_key(args)
    except CliError as exc:
        return _fail(str(exc))
    try:
        statement = audit_head.sign_log(path, key, args.netuid)
    except OSError as exc:
        return _fail(f"cannot read {path}: {exc.strerror or exc}")
    except audit_head.HeadError as exc:
        print(f"not signed: {exc}")
        return 1
    out = Path(args.out) if args.out else audit_head.head_path(path)
    try:
        audit_head.write(statement, out)
    except OSError as exc:
        return _fail(f"cannot write {out}: {exc.strerror or exc}")
    print(
        f"signed: {statement.records} records by {statement.ss58} (netuid {statement.netuid}), "
        f"head {statement.head.hex()} -> {out}"
    )
    return 0
