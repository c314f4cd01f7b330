"""Hash-chained audit log: records per evaluation, aggregate run and host call; the verifier names
the first bad record; a hotkey-signed head says who vouches for how many records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import rt_modules as M
from rt_helpers import HEIGHT, SEED, SUBMISSION, TASK, small_policy

from registry.manifest import ChallengeManifest, ModulePolicy
from registry.state import runtime_validator
from runtime import audit_head
from runtime.audit import AuditLog, default_path, verify
from runtime.policy import Policy
from runtime.sandbox import Sandbox
from validator_node.cli import main
from validator_node.evaluation import Evaluator, SandboxAggregator
from validator_node.metrics import Metrics
from wire.codec import encode
from wire.keys import Hotkey


def _make_log(tmp_path: Path, evaluations: int = 3) -> Path:
    path = default_path(tmp_path)
    log = AuditLog(path)
    sb = Sandbox(tmp_path, audit=log)
    loaded = sb.load(M.wasm(M.GOOD))
    for _ in range(evaluations):
        sb.evaluate(loaded, TASK, SUBMISSION, seed=SEED, block_height=HEIGHT)
    sb.evaluate(sb.load(M.wasm(M.INFINITE_LOOP), small_policy()), TASK, SUBMISSION)
    log.close()
    return path


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_records_per_evaluation_and_host_call(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    recs = _lines(path)
    kinds = [r["kind"] for r in recs]
    assert kinds == (["evaluation"] + ["host_call"] * 3) * 3 + ["evaluation"]
    ev = recs[0]["body"]
    assert isinstance(ev, dict) and ev["ok"] is True and ev["host_calls"] == 3 and len(ev["module"]) == 64
    assert recs[-1]["body"]["error_kind"] == "out_of_fuel"  # type: ignore[index]
    report = verify(path)
    assert report.ok and report.records == len(recs) and report.head == recs[-1]["hash"]


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = _make_log(tmp_path, 1)
    log = AuditLog(path)
    log.append("note", {"x": 1})
    log.close()
    assert verify(path).ok and verify(path).records == len(_lines(path))


def test_edited_record_is_named(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[4])
    rec["body"]["score"] = 1_000_000_000
    lines[4] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    r = verify(path)
    assert (r.ok, r.broken_line, r.broken_seq, r.records) == (False, 5, 4, 4)
    assert "hash" in r.reason


def test_deleted_and_reordered_records_are_named(tmp_path: Path) -> None:
    path = _make_log(tmp_path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    r = verify(path)
    assert (r.ok, r.broken_line) == (False, 3)
    path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")
    assert verify(path).broken_line == 1


def test_torn_tail_reported_then_cut_on_reopen(tmp_path: Path) -> None:
    path = _make_log(tmp_path, 1)
    n = len(_lines(path))
    with path.open("ab") as fh:
        fh.write(b'{"seq": 99, "pre')
    r = verify(path)
    assert (r.ok, r.broken_line) == (False, n + 1)
    AuditLog(path).close()
    assert verify(path).ok and verify(path).records == n


def test_garbage_line(tmp_path: Path) -> None:
    path = _make_log(tmp_path, 1)
    with path.open("ab") as fh:
        fh.write(b"not json\n")
    r = verify(path)
    assert not r.ok and r.reason == "not valid JSON"


def test_sandbox_open_writes_cache_and_audit_under_data_dir(tmp_path: Path) -> None:
    sb = Sandbox.open(tmp_path)
    sb.evaluate(sb.load(M.wasm(M.GOOD)), TASK, SUBMISSION, seed=SEED, block_height=HEIGHT)
    assert sb.audit is not None
    sb.audit.close()
    assert list((tmp_path / "module-cache").glob("*.cwasm"))
    assert verify(default_path(tmp_path)).records == 4


# --- aggregate runs (issue 15): logged like evaluations, once per real run --------------------


def _echo_manifest(wasm: bytes) -> ChallengeManifest:
    return ChallengeManifest(
        "echo", "echo", 1, hashlib.sha256(wasm).digest(), len(wasm), 1,
        ModulePolicy(), 0, 0, b"", 0, 1,
    )  # fmt: skip


def test_aggregate_run_appends_one_record(tmp_path: Path) -> None:
    path = default_path(tmp_path)
    log = AuditLog(path)
    sb = Sandbox(tmp_path, audit=log)
    loaded = sb.load(M.wasm(M.AGGREGATE_ECHO))
    out, r = sb.call_packed(loaded, "aggregate", b"a bundle", challenge="c1", policy_hash=b"p" * 32)
    assert r.ok and out == b"a bundle"
    sb.call_packed(sb.load(M.wasm(M.GOOD_DESCRIBE)), "describe")  # metadata: not a run to log
    _, refused = sb.call_packed(loaded, "aggregate", b"x" * 11, policy=Policy(max_task_bytes=10))
    log.close()
    recs = _lines(path)
    assert [x["kind"] for x in recs] == ["aggregate", "aggregate"]
    body = recs[0]["body"]
    assert isinstance(body, dict)
    assert body["module"] == loaded.wasm_hash.hex() and body["engine"] == sb.se.fingerprint
    assert (body["challenge"], body["policy"]) == ("c1", (b"p" * 32).hex())
    assert (body["bundle"], body["bundle_size"]) == (hashlib.sha256(b"a bundle").hexdigest(), 8)
    assert (body["output"], body["output_size"]) == (hashlib.sha256(b"a bundle").hexdigest(), 8)
    assert (body["ok"], body["error_kind"], body["fuel_used"]) == (True, None, r.fuel_used)
    assert body["fuel_budget"] == loaded.policy.fuel and body["host_calls"] == 0
    assert body["seed"] == bytes(32).hex() and body["block_height"] == 0
    bad = recs[1]["body"]
    assert isinstance(bad, dict) and refused.error_kind == "input_too_large"
    assert (bad["ok"], bad["error_kind"], bad["output"], bad["output_size"]) == (
        False,
        "input_too_large",
        None,
        None,
    )
    assert bad["bundle_size"] == 11
    assert verify(path).ok


def test_memoised_aggregate_appends_nothing(tmp_path: Path) -> None:
    wasm = M.wasm(M.AGGREGATE_ECHO)
    manifest = _echo_manifest(wasm)
    evaluator = Evaluator(tmp_path, Metrics())
    aggregator = SandboxAggregator(evaluator, runtime_validator, Metrics())
    assert aggregator.aggregate(manifest, wasm, b"bundle one") == b"bundle one"
    assert aggregator.aggregate(manifest, wasm, b"bundle one") == b"bundle one"  # the memo
    aggregator.aggregate(manifest, wasm, b"bundle two")
    evaluator.close()
    recs = _lines(default_path(tmp_path))
    assert [x["kind"] for x in recs] == ["aggregate", "aggregate"]
    body = recs[0]["body"]
    assert isinstance(body, dict) and body["challenge"] == "echo"
    assert body["policy"] == hashlib.sha256(encode(manifest.policy)).hexdigest()
    assert body["bundle"] == hashlib.sha256(b"bundle one").hexdigest()
    assert verify(default_path(tmp_path)).records == 2


# --- signed heads: who vouches for how many records ---------------------------------------------

KEY = Hotkey.from_name("audit-a")
OTHER = Hotkey.from_name("audit-b")


def _signed(tmp_path: Path, evaluations: int = 2) -> tuple[Path, audit_head.SignedHead]:
    path = _make_log(tmp_path, evaluations)
    st = audit_head.sign_log(path, KEY, 7)
    audit_head.write(st, audit_head.head_path(path))
    return path, audit_head.read(audit_head.head_path(path))


def test_signed_head_verifies(tmp_path: Path) -> None:
    path, st = _signed(tmp_path)
    recs = _lines(path)
    assert (st.records, st.head.hex(), st.hotkey, st.netuid) == (
        len(recs),
        recs[-1]["hash"],
        KEY.public_key,
        7,
    )
    doc = json.loads(audit_head.head_path(path).read_text())
    assert (doc["domain"], doc["hotkey"], doc["records"]) == ("audit-head", KEY.ss58, len(recs))
    assert audit_head.check(st, path).ok and audit_head.check(st, path, signer=KEY.public_key).ok
    log = AuditLog(path)
    mine = audit_head.sign_open_log(log, KEY, 7)  # the node signs its open log's tip: the same head
    assert (mine.records, mine.head) == (st.records, st.head) and audit_head.check(mine, path).ok
    log.close()


def test_edited_earlier_record_fails_the_signed_head(tmp_path: Path) -> None:
    path, st = _signed(tmp_path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b'"fuel_used":') + len(b'"fuel_used":')  # the first record's fuel, one digit changed
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")
    path.write_bytes(bytes(raw))
    r = audit_head.check(st, path)
    assert not r.ok and r.reason.startswith(f"record 0 (line 1) of the {st.records} signed is broken: hash")


def test_rewritten_chain_fails_the_signed_head(tmp_path: Path) -> None:
    """An edit with every later hash recomputed is a valid chain: only the signed head catches it."""
    path, st = _signed(tmp_path)
    recs = _lines(path)
    recs[1]["body"]["fuel"] = 1  # type: ignore[index]
    path.unlink()
    log = AuditLog(path)
    for rec in recs:
        log.append(str(rec["kind"]), rec["body"])  # type: ignore[arg-type]
    log.close()
    assert verify(path).ok and verify(path).records == st.records
    r = audit_head.check(st, path)
    assert not r.ok and r.reason.startswith(f"the log's head after {st.records} records is ")


def test_changed_signature_or_other_key_fails(tmp_path: Path) -> None:
    path, st = _signed(tmp_path)
    flipped = dataclasses.replace(st, signature=bytes([st.signature[0] ^ 1]) + st.signature[1:])
    r = audit_head.check(flipped, path)
    assert not r.ok and r.reason == f"bad signature: not made by {KEY.ss58} over this statement"
    # another key's signature over the same statement, claimed as KEY's
    forged = dataclasses.replace(st, signature=OTHER.sign(st.signed_bytes()))
    assert audit_head.check(forged, path).reason.startswith("bad signature")
    # another key's own statement: valid, but not the signer the verifier asked for
    theirs = audit_head.sign_log(path, OTHER, 7)
    assert audit_head.check(theirs, path).ok
    r = audit_head.check(theirs, path, signer=KEY.public_key)
    assert not r.ok and r.reason == f"signed by {OTHER.ss58}, expected {KEY.ss58}"
    # the signature binds the subnet and the count too
    assert not audit_head.check(dataclasses.replace(st, netuid=8), path).ok
    assert not audit_head.check(dataclasses.replace(st, records=st.records - 1), path).ok


def test_log_extended_after_signing_verifies_its_signed_prefix(tmp_path: Path) -> None:
    path, st = _signed(tmp_path)
    log = AuditLog(path)
    sb = Sandbox(tmp_path, audit=log)
    sb.evaluate(sb.load(M.wasm(M.GOOD)), TASK, SUBMISSION, seed=SEED, block_height=HEIGHT)
    log.close()
    assert verify(path).records == st.records + 4
    assert audit_head.check(st, path).ok
    lines = path.read_text().splitlines()  # a broken record after the prefix is not the head's business
    path.write_text("\n".join([*lines[:-1], lines[-1].replace('"host_call"', '"host_kall"')]) + "\n")
    assert not verify(path).ok and audit_head.check(st, path).ok
    path.write_text("\n".join(lines[: st.records - 1]) + "\n")  # a cut log no longer holds it
    r = audit_head.check(st, path)
    assert not r.ok and r.reason == f"the log holds {st.records - 1} records; the head signs {st.records}"


def test_malformed_head_file(tmp_path: Path) -> None:
    path, _ = _signed(tmp_path)
    hp = audit_head.head_path(path)
    doc = json.loads(hp.read_text())
    for change in ({"domain": "evidence-vote"}, {"head": "00"}, {"hotkey": "nope"}, {"records": "3"}):
        hp.write_text(json.dumps({**doc, **change}))
        with pytest.raises(audit_head.HeadError):
            audit_head.read(hp)
    hp.write_text("{")
    with pytest.raises(audit_head.HeadError):
        audit_head.read(hp)


def test_node_evaluator_signs_its_log_head(tmp_path: Path) -> None:
    wasm = M.wasm(M.AGGREGATE_ECHO)
    evaluator = Evaluator(tmp_path, Metrics(), hotkey=KEY, netuid=7)
    evaluator.refresh_audit_head()  # no sandbox open yet: nothing to sign
    hp = audit_head.head_path(default_path(tmp_path))
    assert not hp.exists()
    SandboxAggregator(evaluator, runtime_validator, Metrics()).aggregate(_echo_manifest(wasm), wasm, b"b")
    evaluator.refresh_audit_head()
    st = audit_head.read(hp)
    assert st.records == 1 and audit_head.check(st, default_path(tmp_path), signer=KEY.public_key).ok
    SandboxAggregator(evaluator, runtime_validator, Metrics()).aggregate(_echo_manifest(wasm), wasm, b"c")
    evaluator.close()  # a clean stop signs the final head
    assert audit_head.read(hp).records == 2


# --- the CLI: audit sign, audit verify --head ----------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_sign_and_verify_head(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _make_log(tmp_path, 2)
    n = len(_lines(path))
    seed = tmp_path / "key.hex"
    seed.write_text(bytes(range(32)).hex())
    signer = Hotkey.from_seed(bytes(range(32)))
    d = str(tmp_path)
    code, out, _ = _cli(capsys, "audit", "sign", "--data-dir", d, "--netuid", "7", "--key", str(seed))
    assert code == 0 and out.startswith(f"signed: {n} records by {signer.ss58} (netuid 7), head ")
    code, out, _ = _cli(capsys, "audit", "verify", "--data-dir", d)
    first, second = out.splitlines()
    assert code == 0 and first.startswith(f"ok: {n} records, head ")
    assert second == f"signed: {n} records by {signer.ss58} (netuid 7), head {_lines(path)[-1]['hash']}"
    code, out, _ = _cli(capsys, "audit", "verify", "--data-dir", d, "--json")
    assert code == 0 and json.loads(out)["signed"]["hotkey"] == signer.ss58
    code, out, _ = _cli(capsys, "audit", "verify", "--data-dir", d, "--signer", KEY.ss58)
    assert (
        code == 1 and out.splitlines()[1] == f"bad signed head: signed by {signer.ss58}, expected {KEY.ss58}"
    )
    hp = audit_head.head_path(path)
    doc = json.loads(hp.read_text())
    doc["signature"] = "00" + doc["signature"][2:]
    moved = tmp_path / "elsewhere.json"
    moved.write_text(json.dumps(doc))
    code, out, _ = _cli(capsys, "audit", "verify", "--data-dir", d, "--head", str(moved))
    assert code == 1 and out.splitlines()[1].startswith("bad signed head: bad signature")
    code, out, _ = _cli(capsys, "audit", "verify", "--data-dir", d, "--json", "--head", str(moved))
    assert code == 1 and json.loads(out)["signed"]["ok"] is False
    assert _cli(capsys, "audit", "verify", "--data-dir", d, "--head", str(tmp_path / "none.json"))[0] == 2
    moved.write_text("[]")
    assert _cli(capsys, "audit", "verify", "--data-dir", d, "--head", str(moved))[0] == 2
    # a broken log is never signed
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")
    code, out, _ = _cli(capsys, "audit", "sign", "--data-dir", d, "--netuid", "7", "--dev-key", "v0")
    assert code == 1 and out.startswith("not signed: the log is broken at record 1 (line 1)")
    assert _cli(capsys, "audit", "sign", "--data-dir", d, "--netuid", "7")[0] == 2  # no key given
