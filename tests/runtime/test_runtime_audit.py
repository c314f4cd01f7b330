"""Hash-chained audit log: records per evaluation and host call; the verifier names the first bad record."""

from __future__ import annotations

import json
from pathlib import Path

import rt_modules as M
from rt_helpers import HEIGHT, SEED, SUBMISSION, TASK, small_policy

from runtime.audit import AuditLog, default_path, verify
from runtime.sandbox import Sandbox


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
