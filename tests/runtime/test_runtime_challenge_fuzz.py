"""Property tests: on random inputs (well-formed and garbage) each example module scores exactly like
its Python reference. The vectors pin known cases; these look for the cases nobody thought of."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st

from challenges.toolkit import example_dirs, load_reference, load_spec
from runtime import errors
from runtime.policy import Policy
from runtime.sandbox import LoadedModule, Sandbox

_SANDBOX = Sandbox()
_LOADED: dict[str, tuple[LoadedModule, ModuleType]] = {}


def _challenge(name: str) -> tuple[LoadedModule, ModuleType]:
    if name not in _LOADED:
        d: Path = next(p for p in example_dirs() if load_spec(p).name == name)
        spec = load_spec(d)
        _LOADED[name] = (
            _SANDBOX.load(spec.module_path.read_bytes(), Policy.from_dict(spec.policy)),
            load_reference(d),
        )
    return _LOADED[name]


def _module_verdict(loaded: LoadedModule, task: bytes, sub: bytes) -> int:
    r = _SANDBOX.evaluate(loaded, task, sub)
    if r.ok:
        assert r.score is not None
        return r.score
    assert r.error_kind == errors.MODULE_ERROR, r
    return int((r.error_message or "").rsplit(" ", 1)[-1])


def _check(name: str, task: bytes, sub: bytes) -> None:
    loaded, ref = _challenge(name)
    assert _module_verdict(loaded, task, sub) == ref.score(task, sub)


@settings(max_examples=120, deadline=None)
@given(
    data=st.binary(max_size=300),
    garbage=st.binary(max_size=60),
    mode=st.integers(0, 2),
    window=st.integers(1, 300),
)
def test_lz_compress_matches_reference(data: bytes, garbage: bytes, mode: int, window: int) -> None:
    _, ref = _challenge("lz-compress")
    text = data * 3 if mode == 2 else data
    sub = garbage if mode == 0 else ref.encode(text, window=window)
    if mode == 1 and sub:
        sub = sub[: len(sub) // 2] + garbage[:3] + sub[len(sub) // 2 :]  # corrupt the middle
    _check("lz-compress", text, sub)


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(2, 40),
    seed=st.integers(0, 2**32),
    spread=st.sampled_from([3, 100, (1 << 20) - 1]),
    perm_seed=st.integers(0, 1000),
    damage=st.integers(0, 3),
)
def test_tsp_tour_matches_reference(n: int, seed: int, spread: int, perm_seed: int, damage: int) -> None:
    import random

    _, ref = _challenge("tsp-tour")
    task = ref.make_task(n, seed, spread=spread)
    tour = list(range(n))
    random.Random(perm_seed).shuffle(tour)
    sub = ref.encode_tour(tour)
    if damage == 1:
        sub = sub[:-2] + sub[:2]  # duplicate city
    elif damage == 2:
        sub = sub[:-1]
    elif damage == 3:
        task = task[:-3]
    _check("tsp-tour", task, sub)


@settings(max_examples=80, deadline=None)
@given(
    nv=st.integers(1, 40),
    nc=st.integers(1, 60),
    k=st.integers(1, 5),
    seed=st.integers(0, 1000),
    bits=st.binary(min_size=6, max_size=6),
    garbage=st.binary(max_size=40),
    mode=st.integers(0, 2),
)
def test_maxsat_matches_reference(
    nv: int, nc: int, k: int, seed: int, bits: bytes, garbage: bytes, mode: int
) -> None:
    _, ref = _challenge("maxsat")
    k = min(k, nv)
    task = ref.make_task(nv, nc, k, seed)
    sub = bits[: (nv + 7) // 8]
    if mode == 1:
        task = task[:8] + garbage + task[8:]
    elif mode == 2:
        task, sub = garbage, bits
    _check("maxsat", task, sub)
