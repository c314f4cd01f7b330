from __future__ import annotations

from collections.abc import Iterator

import pytest
import rt_modules as M
from rt_helpers import run_good

from runtime.sandbox import EvalResult, LoadedModule, Sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    yield Sandbox(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def good(sandbox: Sandbox) -> LoadedModule:
    return sandbox.load(M.wasm(M.GOOD))


@pytest.fixture(scope="session")
def baseline(sandbox: Sandbox, good: LoadedModule) -> EvalResult:
    r = run_good(sandbox, good)
    assert r.ok, r
    return r


@pytest.fixture
def still_healthy(sandbox: Sandbox, good: LoadedModule, baseline: EvalResult) -> Iterator[None]:
    """After a hostile module ran: the process keeps going and a good evaluation is unchanged."""
    yield
    r = run_good(sandbox, good)
    assert (r.ok, r.score, r.fuel_used, r.memory_peak) == (
        baseline.ok,
        baseline.score,
        baseline.fuel_used,
        baseline.memory_peak,
    )
