"""Every scaffold language builds reproducibly with its pinned toolchain; a missing toolchain is one
clear line; the seeded template draws fresh task instances from `platform.seed`.

No test here skips when a toolchain is missing: `scripts/ensure-system-deps.sh` (run by `make test`)
installs Debian's Rust and Node.js, and the first AssemblyScript build installs the pinned asc.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from challenges import toolkit
from challenges.toolkit import (
    LANGS,
    TEMPLATES,
    ChallengeError,
    build,
    build_steps,
    load_reference,
    load_spec,
    scaffold,
)
from runtime.policy import Policy
from runtime.sandbox import Sandbox
from validator_node.cli import main

ALL_LANGS = ["zig", "c", "wat", "rust", "assemblyscript"]
SEEDED = TEMPLATES / "seeded"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_language_is_scaffolded() -> None:
    assert list(LANGS) == ALL_LANGS
    for lang in LANGS:
        assert (TEMPLATES / lang / toolkit._SOURCES[lang]).is_file()


@pytest.mark.parametrize("lang", ALL_LANGS)
def test_same_scaffold_builds_byte_identical_in_two_directories(tmp_path: Path, lang: str) -> None:
    """Same source in two unrelated directories (different depths): same module, valid under the
    scaffold's own policy (ABI exports, no imports at all)."""
    first = scaffold(tmp_path / "a" / "twin", "twin", lang)
    second = scaffold(tmp_path / "b" / "somewhere" / "deeper" / "twin", "twin", lang)
    wasm1, wasm2 = build(first), build(second)
    assert wasm1 == wasm2, f"{lang}: {len(wasm1)} vs {len(wasm2)} bytes"
    spec = load_spec(first)
    loaded = Sandbox().load(wasm1, Policy.from_dict(spec.policy))
    assert loaded.info.abi_version == 1
    r = Sandbox().evaluate(loaded, b"hello world", b"hello there")
    assert r.ok and r.score == 1_000_000_000 * 6 // 11


def test_rust_builds_with_debian_rustc_by_path(tmp_path: Path) -> None:
    d = scaffold(tmp_path / "r", "r", "rust")
    steps = build_steps(load_spec(d), tmp_path / "out.wasm", tmp_path / "work")
    assert [s[0] for s in steps] == ["/usr/bin/rustc", "/usr/bin/rustc"]
    final = steps[-1]
    for flag in ("panic=abort", "strip=symbols", "opt-level=3", "linker=/usr/bin/rust-lld"):
        assert flag in final
    assert final[final.index("--target") + 1] == "wasm32-unknown-unknown"
    assert final[final.index("--crate-type") + 1] == "cdylib"
    assert any(a.startswith("--remap-path-prefix=") and a.endswith("=src") for a in final)


def test_missing_rustc_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = scaffold(tmp_path / "r", "r", "rust")
    monkeypatch.setattr(toolkit, "RUSTC", str(tmp_path / "no-such-rustc"))
    code, out, err = run(capsys, "challenge", "build", str(d))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "rustc not found" in err
    assert "run scripts/ensure-system-deps.sh as root" in err


def test_missing_node_or_npm_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = scaffold(tmp_path / "as", "as", "assemblyscript")
    node = shutil.which("node")
    assert node, "node is installed by scripts/ensure-system-deps.sh"
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ChallengeError) as ei:
        build(d)
    assert "\n" not in str(ei.value) and str(ei.value).startswith("node not found")
    node_only = tmp_path / "node-only-bin"
    node_only.mkdir()
    (node_only / "node").symlink_to(node)
    monkeypatch.setenv("PATH", str(node_only))
    monkeypatch.setenv("PV_ASC_CACHE", str(tmp_path / "empty-cache"))  # forces the npm install
    with pytest.raises(ChallengeError) as ei:
        build(d)
    assert "\n" not in str(ei.value) and str(ei.value).startswith("npm not found")
    assert "run scripts/ensure-system-deps.sh as root" in str(ei.value)


# --- fresh task instances from platform.seed (challenges/templates/seeded) -----------------------

SEED_A = "11" * 32
SEED_B = bytes(range(32)).hex()


def _test_json(capsys: pytest.CaptureFixture[str], d: Path, sub: Path, seed: str, policy: Path) -> dict:
    code, out, _ = run(
        capsys, "challenge", "test", str(d / "seeded-sort.wasm"), "--task", str(d / "tasks/task.bin"),
        "--submission", str(sub), "--policy", str(policy), "--seed", seed, "--json",
    )  # fmt: skip
    assert code == 0
    return json.loads(out)


def test_seeded_template_scores_fresh_instances_per_seed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "seeded-sort"
    shutil.copytree(SEEDED, d)
    code, out, err = run(capsys, "challenge", "build", str(d))
    assert code == 0, err
    assert out.splitlines()[1] == "vectors: 8/8 match the reference"
    ref = load_reference(d)
    task = (d / "tasks/task.bin").read_bytes()
    flawed = d / "tasks/submission.bin"  # bubble sort missing its last comparator
    correct = tmp_path / "bubble.bin"
    correct.write_bytes(ref.bubble(8))
    policy = d / "challenge.toml"

    a = _test_json(capsys, d, flawed, SEED_A, policy)
    b = _test_json(capsys, d, flawed, SEED_B, policy)
    assert a["ok"] and b["ok"]
    # the same submission, two seeds: two different task instances, two different scores ...
    assert a["score"] != b["score"]
    assert ref.instances(bytes.fromhex(SEED_A), 8, 200) != ref.instances(bytes.fromhex(SEED_B), 8, 200)
    # ... each exactly the reference's for that seed
    assert a["score"] == ref.score(task, flawed.read_bytes(), bytes.fromhex(SEED_A))
    assert b["score"] == ref.score(task, flawed.read_bytes(), bytes.fromhex(SEED_B))
    # a general answer (a correct sorting network) scores 1.0 whatever the seed
    for seed in (SEED_A, SEED_B):
        assert _test_json(capsys, d, correct, seed, policy)["score"] == 1_000_000_000
    # the module reads the seed through the host: a policy without "seed" refuses it
    bare = tmp_path / "no-seed.toml"
    bare.write_text("[policy]\nhost_functions = []\n")
    doc = _test_json(capsys, d, flawed, SEED_A, bare)
    assert doc["ok"] is False and doc["error"]["kind"] == "forbidden_import"
