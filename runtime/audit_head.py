"""Signed heads of the audit log: a validator's hotkey vouches for the first N records of its log.

The statement is the wire message `audit.head` [hotkey, records, head], signed the way every signed
thing in the project is (`wire.envelope.signing_bytes`): the signature covers the canonical CBOR of
``["bt-platform/sig/1", "audit-head", netuid, "audit.head", 1, body]``, so it can never be taken
for a signature made for another purpose, subnet or version. `records` is the number of records,
`head` the hash of the last of them (32 zero bytes for an empty log).

It is kept as `audit.head.json` next to the log: ``{"domain", "version", "netuid", "hotkey" (ss58),
"records", "head" (hex), "signature" (hex)}``. A statement checks out against a log when the
signature is the named hotkey's and the log's first `records` records form an intact chain that
ends at `head`: records appended after signing are not covered and do not matter; a change to any
covered record does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.audit import AuditLog, verify
from wire import keys
from wire.codec import U64, Bytes32, encode, wire_message
from wire.envelope import signing_bytes
from wire.errors import WireError

HEAD_FILE = "audit.head.json"
DOMAIN = "audit-head"
VERSION = 1


@wire_message("audit.head", version=VERSION, max_size=128, domain=DOMAIN)
class AuditHead:
    hotkey: Bytes32
    records: U64
    head: Bytes32


class HeadError(ValueError):
    """A head file that is not a well-formed statement (or a log that cannot be signed)."""


@dataclass(frozen=True)
class SignedHead:
    netuid: int
    hotkey: bytes  # sr25519 public key
    records: int
    head: bytes
    signature: bytes

    @property
    def ss58(self) -> str:
        return keys.ss58_of(self.hotkey)

    def signed_bytes(self) -> bytes:
        return statement_bytes(self.netuid, self.hotkey, self.records, self.head)

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": DOMAIN,
            "version": VERSION,
            "netuid": self.netuid,
            "hotkey": self.ss58,
            "records": self.records,
            "head": self.head.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> SignedHead:
        if not isinstance(doc, dict):
            raise HeadError("not a JSON object")
        if doc.get("domain") != DOMAIN or doc.get("version") != VERSION:
            raise HeadError(
                f"not an audit head statement (domain {doc.get('domain')!r}, version {doc.get('version')!r})"
            )
        try:
            netuid, records = doc["netuid"], doc["records"]
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (netuid, records)):
                raise HeadError("netuid and records must be integers")
            if not 0 <= netuid < 1 << 16:
                raise HeadError(f"netuid {netuid} out of range")
            head = cls(
                netuid,
                keys.public_key_of(doc["hotkey"]),
                records,
                bytes.fromhex(doc["head"]),
                bytes.fromhex(doc["signature"]),
            )
            head.signed_bytes()  # the message checks the rest (32-byte head, u64 count)
        except HeadError:
            raise
        except (KeyError, TypeError, ValueError, WireError) as exc:
            raise HeadError(f"malformed statement: {type(exc).__name__}: {exc}") from None
        return head


def statement_bytes(netuid: int, hotkey: bytes, records: int, head: bytes) -> bytes:
    """What the hotkey signs (raises WireError for a field out of its message's shape)."""
    return signing_bytes(netuid, AuditHead, encode(AuditHead(hotkey, records, head)))


def head_path(log_path: str | Path) -> Path:
    """Where the signed head of `log_path` is kept: `audit.head.json` beside it."""
    return Path(log_path).with_name(HEAD_FILE)


def sign(hotkey: keys.Hotkey, netuid: int, records: int, head: bytes) -> SignedHead:
    sig = hotkey.sign(statement_bytes(netuid, hotkey.public_key, records, head))
    return SignedHead(netuid, hotkey.public_key, records, head, sig)


def sign_log(path: str | Path, hotkey: keys.Hotkey, netuid: int) -> SignedHead:
    """Sign the head of the log file at `path` after checking its whole chain: a broken log (an
    edited record, a torn last line) is refused, never vouched for."""
    report = verify(path)
    if not report.ok:
        raise HeadError(
            f"the log is broken at record {report.broken_seq} (line {report.broken_line}): {report.reason}"
        )
    return sign(hotkey, netuid, report.records, bytes.fromhex(report.head))


def sign_open_log(log: AuditLog, hotkey: keys.Hotkey, netuid: int) -> SignedHead:
    """Sign what an open log has written (the node's own, which it never reads back): no file read."""
    records, head = log.tip()
    return sign(hotkey, netuid, records, head)


def write(statement: SignedHead, path: str | Path) -> None:
    """Replace `path` atomically (a reader sees the old statement or the new one, never half)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(statement.to_json(), indent=1) + "\n")
    os.replace(tmp, path)


def read(path: str | Path) -> SignedHead:
    """Raises OSError when unreadable, HeadError when not a statement."""
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise HeadError(f"not valid JSON: {exc}") from None
    return SignedHead.from_json(doc)


@dataclass(frozen=True)
class HeadReport:
    ok: bool
    statement: SignedHead
    reason: str = ""


def check(statement: SignedHead, log_path: str | Path, signer: bytes | None = None) -> HeadReport:
    """Does `statement` hold for the log at `log_path` (and, if given, was it signed by `signer`)?
    The signature is checked first, then the signed prefix of the log; OSError if unreadable."""

    def bad(reason: str) -> HeadReport:
        return HeadReport(False, statement, reason)

    if signer is not None and statement.hotkey != signer:
        return bad(f"signed by {statement.ss58}, expected {keys.ss58_of(signer)}")
    if not keys.verify(statement.hotkey, statement.signed_bytes(), statement.signature):
        return bad(f"bad signature: not made by {statement.ss58} over this statement")
    report = verify(log_path, limit=statement.records)
    if not report.ok:
        seq = report.broken_seq if report.broken_seq is not None else "?"
        return bad(
            f"record {seq} (line {report.broken_line}) of the {statement.records} signed is broken: "
            f"{report.reason}"
        )
    if report.records < statement.records:
        return bad(f"the log holds {report.records} records; the head signs {statement.records}")
    if report.head != statement.head.hex():
        return bad(
            f"the log's head after {statement.records} records is {report.head}, "
            f"the signed one {statement.head.hex()}"
        )
    return HeadReport(True, statement)
