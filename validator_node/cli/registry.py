"""`validator-node registry ...`: the sudo owner's tools for challenge manifests.

    keygen --out FILE                 a new sr25519 key (hex seed file, mode 0600) for devnets and tests
    sign MANIFEST.toml --wasm FILE    fill in the module hash and size, sign, write MANIFEST.signed
    verify SIGNED [--wasm FILE]       exit 0 with a one-line summary when valid, 1 with the reason when not
    list [PATH ...]                   one line per signed manifest found

A signed file is the canonical CBOR of a `registry.action` (op + sudo-signed envelope): exactly
what a block carries, so `verify` checks what validators will check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import sys
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from registry import (
    PPB,
    ChallengeManifest,
    ModulePolicy,
    RegistryAction,
    RegistryError,
    check_manifest,
    check_module,
    open_signed_manifest,
)
from registry.manifest import COMMAND_OPS, MANIFEST_OPS, MAX_TASK_BYTES, ChallengeCommand
from wire import WireError, decode, encode
from wire.envelope import open_envelope
from wire.keys import Hotkey, public_key_of, ss58_of

SIGNED_SUFFIX = ".signed"


class CliError(Exception):
    """Bad input on the command line: printed as one line, exit status 2."""


def add_key_arguments(p: argparse.ArgumentParser) -> None:
    """Where the signing hotkey comes from, in Bittensor's conventions (or a seed file / dev name)."""
    p.add_argument("--key", help="hex seed file written by `registry keygen`")
    p.add_argument("--wallet.name", dest="wallet_name", help="bittensor wallet name")
    p.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", help="wallet hotkey name")
    p.add_argument(
        "--wallet.path", dest="wallet_path", default="~/.bittensor/wallets", help="wallets directory"
    )
    p.add_argument("--dev-key", help="deterministic development key by name (never for real stake)")


def load_key(args: argparse.Namespace) -> Hotkey:
    chosen = [x for x in (args.key, args.wallet_name, args.dev_key) if x]
    if len(chosen) != 1:
        raise CliError("give exactly one of --key FILE, --wallet.name NAME, --dev-key NAME")
    if args.key:
        try:
            seed = bytes.fromhex(Path(args.key).read_text().strip())
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read key file {args.key}: {exc}") from None
        if len(seed) != 32:
            raise CliError(f"key file {args.key} must hold a 32-byte hex seed")
        return Hotkey.from_seed(seed)
    if args.wallet_name:
        try:
            return Hotkey.from_wallet(args.wallet_name, args.wallet_hotkey, args.wallet_path)
        except Exception as exc:
            raise CliError(f"cannot open wallet {args.wallet_name}/{args.wallet_hotkey}: {exc}") from None
    return Hotkey.from_name(args.dev_key)


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="registry_command", metavar="SUBCOMMAND")

    p = sub.add_parser("keygen", help="create a new sr25519 hotkey seed file")
    p.add_argument("--out", required=True, help="file to write (refuses to overwrite without --force)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_guard(cmd_keygen))

    p = sub.add_parser("sign", help="sign a challenge manifest (TOML) for a module")
    p.add_argument("manifest", help="manifest TOML")
    p.add_argument("--wasm", required=True, help="the module the manifest names")
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--op", choices=MANIFEST_OPS, default="add")
    p.add_argument("--out", help=f"output file (default: MANIFEST{SIGNED_SUFFIX})")
    p.add_argument(
        "--no-runtime",
        dest="runtime",
        action="store_false",
        help="skip the runtime's module validation (the network still runs it: never for a real subnet)",
    )
    add_key_arguments(p)
    p.set_defaults(func=_guard(cmd_sign))

    p = sub.add_parser("verify", help="verify a signed manifest (and optionally its module)")
    p.add_argument("signed")
    p.add_argument("--wasm", help="check the module bytes against the signed hash and validate them")
    p.add_argument("--netuid", type=int, help="expected subnet (default: the one it was signed for)")
    p.add_argument("--sudo", help="expected signer (the subnet owner's hotkey, ss58)")
    p.add_argument("--mechanisms", type=int, default=1, help="the subnet's mechanism count")
    p.add_argument(
        "--no-runtime", action="store_true", help="check the module hash only, not the runtime rules"
    )
    p.set_defaults(func=_guard(cmd_verify))

    p = sub.add_parser("list", help="list signed manifests")
    p.add_argument("paths", nargs="*", default=["."], help=f"files, or directories holding *{SIGNED_SUFFIX}")
    p.set_defaults(func=_guard(cmd_list))

    p = sub.add_parser("command", help="sign a lifecycle command: activate, deactivate or remove")
    p.add_argument("op", choices=COMMAND_OPS)
    p.add_argument("challenge_id")
    p.add_argument("--nonce", type=int, required=True, help="above every nonce the owner used before")
    p.add_argument("--netuid", type=int, required=True)
    p.add_argument("--out", required=True, help="file to write the signed action to")
    add_key_arguments(p)
    p.set_defaults(func=_guard(cmd_command))

    p = sub.add_parser("publish", help="hand a signed action to a validator; it takes effect once decided")
    p.add_argument("signed", help="a file written by `registry sign` or `registry command`")
    p.add_argument("--wasm", help="the module (required for add and update)")
    p.add_argument("--validator", required=True, help="validator address /ip4/.../tcp/.../p2p/...")
    p.set_defaults(func=_guard(cmd_publish))


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


# --- keygen ------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists (use --force to overwrite)")
    seed = secrets.token_bytes(32)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(seed.hex() + "\n")
    key = Hotkey.from_seed(seed)
    print(f"wrote {out} (keep it secret): ss58 {key.ss58} public key {key.public_key.hex()}")
    return 0


# --- sign --------------------------------------------------------------------------------------


def share_to_ppb(value: Any) -> int:
    """A decimal emission share ("0.6") to exact parts per billion; no float on the way."""
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise CliError(f"emission_share {value!r} is not a decimal number") from None
    ppb = d * PPB
    if ppb != ppb.to_integral_value() or not 0 <= ppb <= PPB:
        raise CliError(f"emission_share {value} must be in [0, 1] with at most 9 decimal places")
    return int(ppb)


def manifest_from_toml(path: Path, wasm: bytes) -> ChallengeManifest:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read manifest {path}: {exc}") from None
    top = doc
    doc = dict(doc.get("challenge", doc))
    if "policy" not in doc and isinstance(top.get("policy"), dict):
        doc["policy"] = top["policy"]  # a [policy] table beside [challenge] belongs to it
    sha, size = hashlib.sha256(wasm).digest(), len(wasm)
    if "wasm_sha256" in doc and _hex(path, "wasm_sha256", doc.pop("wasm_sha256")) != sha:
        raise CliError(f"the manifest names a module other than the --wasm file (sha256 {sha.hex()[:16]}..)")
    if "wasm_size" in doc and str(doc.pop("wasm_size")) != str(size):
        raise CliError(f"the manifest's wasm_size is not the --wasm file's size ({size})")
    if "emission_share" in doc:
        doc["emission_share_ppb"] = share_to_ppb(doc.pop("emission_share"))
    if "task_file" in doc:
        task_path = path.parent / str(doc.pop("task_file"))
        try:
            doc["task"] = task_path.read_bytes()
        except OSError as exc:  # missing, a folder, unreadable: one line, never a traceback
            raise CliError(f"manifest {path}: task_file {task_path}: {exc.strerror or exc}") from None
    elif "task_hex" in doc:
        doc["task"] = _hex(path, "task_hex", doc.pop("task_hex"))
    elif isinstance(doc.get("task"), str):
        doc["task"] = str(doc["task"]).encode()
    if isinstance(doc.get("task"), bytes) and len(doc["task"]) > MAX_TASK_BYTES:
        raise CliError(
            f"manifest {path}: the task is {len(doc['task'])} bytes; a manifest carries at most "
            f"{MAX_TASK_BYTES} (derive larger tasks inside the module from platform.seed)"
        )
    fields = set(ChallengeManifest.__dataclass_fields__) - {"wasm_sha256", "wasm_size"}
    unknown, missing = sorted(set(doc) - fields), sorted(fields - set(doc) - {"policy"})
    if unknown or missing:
        raise CliError(
            f"manifest {path}: "
            + (f"unknown keys {unknown}; " if unknown else "")
            + (f"missing keys {missing}; " if missing else "")
            + "a manifest lists the ChallengeManifest fields (see docs/sudo-owner.md), not challenge.toml's"
        )
    try:
        doc["policy"] = ModulePolicy.from_dict(doc.get("policy", {}))
        return ChallengeManifest(wasm_sha256=sha, wasm_size=size, **doc)
    except (TypeError, ValueError) as exc:
        raise CliError(f"manifest {path}: {exc}") from None


def _hex(path: Path, key: str, value: object) -> bytes:
    try:
        return bytes.fromhex(str(value))
    except ValueError as exc:
        raise CliError(f"manifest {path}: {key} is not hex: {exc}") from None


def cmd_sign(args: argparse.Namespace) -> int:
    wasm = _read(args.wasm)
    manifest = manifest_from_toml(Path(args.manifest), wasm)
    try:
        check_manifest(manifest, mechanism_count=256)  # the mechanism count is checked by `verify`
        # the runtime's own validation under the manifest's policy: a module the network would
        # refuse is never signed (imports, exports, sizes, complexity: what validators check)
        check_module(manifest, wasm, validate=None if args.runtime else (lambda _w, _p: None))
    except RegistryError as exc:
        raise CliError(f"refusing to sign: {exc}") from None
    key = load_key(args)
    from registry import sign_manifest

    try:
        action = sign_manifest(manifest, key, args.netuid, op=args.op)
        data = encode(action)
    except WireError as exc:
        raise CliError(f"cannot encode the manifest: {exc}") from None
    out = Path(args.out) if args.out else Path(args.manifest).with_suffix(SIGNED_SUFFIX)
    out.write_bytes(data)
    print(
        f"signed {args.op} {manifest.challenge_id} v{manifest.version} by {key.ss58} -> {out} ({len(data)} B)"
    )
    return 0


# --- verify / list -----------------------------------------------------------------------------


def summarize(action: RegistryAction, manifest: ChallengeManifest) -> str:
    m = manifest
    return (
        f"{action.op} {m.challenge_id} v{m.version} '{m.name}': module {m.wasm_sha256.hex()[:16]}.. "
        f"{m.wasm_size} B, ABI {m.abi_version}, share {m.emission_share_ppb / PPB:.9f}, "
        f"mechanism {m.mechanism_id}, nonce {m.nonce}, netuid {action.signed.netuid}, "
        f"signed by {ss58_of(action.signed.signer)}"
    )


def verify_file(
    path: Path,
    *,
    netuid: int | None = None,
    sudo: str | None = None,
    mechanisms: int = 1,
    wasm: bytes | None = None,
    runtime: bool = True,
) -> str:
    """The one-line summary of a valid signed file; raises RegistryError/CliError with the reason."""
    try:
        action = decode(_read(str(path)), RegistryAction)
    except WireError as exc:
        raise RegistryError("malformed", f"not a signed registry action: {exc}") from None
    net = action.signed.netuid if netuid is None else netuid
    sudo_key = None
    if sudo:
        try:
            sudo_key = public_key_of(sudo)
        except WireError as exc:
            raise CliError(str(exc)) from None
    if action.op in COMMAND_OPS:
        if sudo_key is not None and action.signed.signer != sudo_key:
            raise RegistryError("wrong_signer", "not signed by the given sudo key")
        try:
            cmd = open_envelope(action.signed, ChallengeCommand, net)
        except WireError as exc:
            raise RegistryError("bad_signature", str(exc)) from None
        if cmd.op != action.op:
            raise RegistryError(
                "op_mismatch", f"the signed command is {cmd.op!r}, the action says {action.op!r}"
            )
        return f"{cmd.op} {cmd.challenge_id}, nonce {cmd.nonce}, signed by {ss58_of(action.signed.signer)}"
    if action.op not in MANIFEST_OPS:
        raise RegistryError("unknown_op", f"unknown registry op {action.op!r}")
    manifest = open_signed_manifest(action.signed, net, sudo_key)
    check_manifest(manifest, mechanisms)
    line = summarize(action, manifest)
    if wasm is not None:
        check_module(manifest, wasm, validate=None if runtime else (lambda _w, _p: None))
        line += "; module matches" + (" and passes the runtime's validation" if runtime else " (hash only)")
    return line


def cmd_verify(args: argparse.Namespace) -> int:
    wasm = _read(args.wasm) if args.wasm else None
    try:
        line = verify_file(
            Path(args.signed),
            netuid=args.netuid,
            sudo=args.sudo,
            mechanisms=args.mechanisms,
            wasm=wasm,
            runtime=not args.no_runtime,
        )
    except RegistryError as exc:
        print(f"invalid: {exc.code}: {exc.message}")
        return 1
    print(f"valid: {line}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for p in map(Path, args.paths):
        files.extend(sorted(p.glob(f"*{SIGNED_SUFFIX}")) if p.is_dir() else [p])
    bad = 0
    for f in files:
        try:
            print(f"{f}: {verify_file(f, mechanisms=256)}")
        except RegistryError as exc:
            bad += 1
            print(f"{f}: INVALID {exc.code}: {exc.message}")
    if not files:
        print(f"no *{SIGNED_SUFFIX} files in {' '.join(args.paths)}")
    return 1 if bad else 0


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


# --- lifecycle commands and publishing --------------------------------------------------------------


def cmd_command(args: argparse.Namespace) -> int:
    from registry.state import sign_command

    action = sign_command(args.op, args.challenge_id, args.nonce, load_key(args), args.netuid)
    Path(args.out).write_bytes(encode(action))
    print(f"signed {args.op} {args.challenge_id} (nonce {args.nonce}) -> {args.out}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import trio

    from validator_node.p2p.submit_client import submit_items
    from validator_node.p2p.submit_replies import accepted
    from validator_node.pipeline.messages import RegistryItem

    try:
        action = decode(_read(args.signed), RegistryAction)
    except WireError as exc:
        raise CliError(f"{args.signed} is not a signed registry action: {exc}") from None
    module = None
    if action.op in MANIFEST_OPS:
        if not args.wasm:
            raise CliError(f"a signed {action.op} needs its module: --wasm FILE")
        module = _read(args.wasm)
    try:
        (reply,) = trio.run(submit_items, args.validator, [encode(RegistryItem(action, module))])
    except Exception as exc:
        print(f"error: could not reach {args.validator}: {exc}", file=sys.stderr)
        return 1
    if accepted(reply):
        note = reply[4:] if reply.startswith("ok: ") else "pooled; it applies once a block decides it"
        print(f"ok: {action.op} handed to the validator: {note}")
        return 0
    print(reply)
    return 1
