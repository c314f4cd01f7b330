"""Fixtures for the seed-subnet challenges: one sandbox per session, the Allways module and reference."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from challenges.toolkit import load_reference, load_spec
from runtime.policy import Policy
from runtime.sandbox import LoadedModule, Sandbox

ALLWAYS_DIR = Path(__file__).resolve().parents[2] / "challenges" / "allways-swap"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("seed-data"))


@pytest.fixture(scope="session")
def allways_ref() -> ModuleType:
    return load_reference(ALLWAYS_DIR)


@pytest.fixture(scope="session")
def allways_policy() -> Policy:
    return Policy.from_dict(load_spec(ALLWAYS_DIR).policy)


@pytest.fixture(scope="session")
def allways(sandbox: Sandbox, allways_policy: Policy) -> LoadedModule:
    return sandbox.load((ALLWAYS_DIR / load_spec(ALLWAYS_DIR).module).read_bytes(), allways_policy)
