"""Signed challenge manifests and their lifecycle state machine (sans-I/O; uses only wire/, runtime/)."""

from registry.manifest import (
    PPB,
    ChallengeCommand,
    ChallengeManifest,
    ModulePolicy,
    RegistryAction,
)
from registry.state import (
    ChallengeEntry,
    ModuleCheckFailed,
    RegistryError,
    RegistryState,
    apply,
    check_manifest,
    check_module,
    genesis,
    open_signed_manifest,
    sign_command,
    sign_manifest,
    state_root,
)

__all__ = [
    "PPB",
    "ChallengeCommand",
    "ChallengeEntry",
    "ChallengeManifest",
    "ModuleCheckFailed",
    "ModulePolicy",
    "RegistryAction",
    "RegistryError",
    "RegistryState",
    "apply",
    "check_manifest",
    "check_module",
    "genesis",
    "open_signed_manifest",
    "sign_command",
    "sign_manifest",
    "state_root",
]
