"""Example challenges: the committed module, its source rebuild and the Python reference all agree."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from challenges.toolkit import build, example_dirs, load_reference, load_spec, read_vectors
from runtime import errors
from runtime.policy import Policy
from runtime.sandbox import EvalResult, Sandbox

EXAMPLES = example_dirs()
IDS = [p.name for p in EXAMPLES]


def verdict(r: EvalResult) -> int:
    """The module's raw verdict: the score, or the negative code it returned."""
    if r.ok:
        assert r.score is not None
        return r.score
    assert r.error_kind == errors.MODULE_ERROR, r
    return int((r.error_message or "").rsplit(" ", 1)[-1])


def test_three_languages_covered() -> None:
    assert {load_spec(d).lang for d in EXAMPLES} >= {"zig", "c", "wat"}
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("directory", EXAMPLES, ids=IDS)
def test_module_matches_reference_on_vectors(sandbox: Sandbox, directory: Path) -> None:
    spec = load_spec(directory)
    policy = Policy.from_dict(spec.policy)
    loaded = sandbox.load(spec.module_path.read_bytes(), policy)
    ref = load_reference(directory)
    vectors = read_vectors(directory)
    assert len(vectors) >= 10
    assert any(v[3] < 0 for v in vectors) and any(v[3] > 0 for v in vectors)
    for name, task, sub, want in vectors:
        assert ref.score(task, sub) == want, f"reference drifted from vectors.json on {name}"
        got = verdict(sandbox.evaluate(loaded, task, sub))
        assert got == want, f"{spec.name}/{name}: module {got}, reference {want}"


@pytest.mark.parametrize("directory", EXAMPLES, ids=IDS)
def test_describe_is_json_metadata(sandbox: Sandbox, directory: Path) -> None:
    import json

    spec = load_spec(directory)
    data, r = sandbox.call_packed(sandbox.load(spec.module_path.read_bytes()), "describe")
    assert r.ok and data is not None
    assert json.loads(data)["name"] == spec.name


@pytest.mark.parametrize("directory", EXAMPLES, ids=IDS)
def test_rebuild_from_source_is_byte_identical(directory: Path, tmp_path: Path) -> None:
    """Rebuild with the pinned toolchain, from a copy in another directory: same bytes as committed."""
    spec = load_spec(directory)
    committed = hashlib.sha256(spec.module_path.read_bytes()).hexdigest()
    copy = tmp_path / spec.name
    shutil.copytree(directory, copy)
    rebuilt = hashlib.sha256(build(copy)).hexdigest()
    assert rebuilt == committed, f"{spec.name}: rebuilt {rebuilt} != committed {committed}"
