"""Challenge manifests and the sudo-signed commands that change the registry, as wire messages.

A manifest is everything a validator needs to run a challenge identically to every other
validator: the exact module (sha256 and size), the ABI it was built for, the sandbox policy, the
task bytes, the emission share and the mechanism it pays into. The subnet owner's sudo key signs
the whole manifest (so the signature covers the module hash: a validator that holds the signed
manifest can check any module bytes it was handed, from any peer). Every number is an integer:
emission shares are parts per billion so that all validators sum them identically.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from wire import U8, U16, U32, U64, Bytes32, Len, Range, wire_message
from wire.envelope import SignedEnvelope

PPB = 1_000_000_000  # 1.0 as parts per billion (emission shares; also the score fixed point)
SUPPORTED_ABI_VERSIONS = frozenset({1})
MAX_TASK_BYTES = 256 * 1024
MAX_MODULE_BYTES = 16 * 1024 * 1024
HOST_FUNCTIONS = frozenset({"log", "seed", "block_height"})  # the ABI v1 `platform` imports
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

ChallengeId = Annotated[str, Len(1, 64)]
Share = Annotated[int, Range(0, PPB)]


_DEFAULT_HOST_FUNCTIONS = ("block_height", "log", "seed")


@wire_message("registry.policy", version=1, max_size=4096)
class ModulePolicy:
    """Sandbox limits agreed by all validators; the field names are runtime.policy.Policy's.

    Fuel (and the fuel charged per host call / logged byte) decides outcomes, so it is agreed here
    rather than configured per node; wall_clock_ms is only a local safety net.
    """

    fuel: U64 = 1_000_000_000
    memory_bytes: U64 = 64 * 1024 * 1024
    table_elements: U32 = 10_000
    wall_clock_ms: U32 = 20_000
    max_task_bytes: U32 = 1024 * 1024
    max_submission_bytes: U32 = 1024 * 1024
    max_output_bytes: U32 = 64 * 1024
    # sorted, unique; the same default as the runtime Policy, so local `challenge test` matches registration
    host_functions: Annotated[tuple[Annotated[str, Len(1, 32)], ...], Len(0, 16)] = _DEFAULT_HOST_FUNCTIONS
    max_host_calls: U32 = 1_000
    max_log_bytes: U32 = 16 * 1024
    host_call_fuel: U64 = 100_000
    log_byte_fuel: U64 = 100
    max_module_bytes: U32 = 4 * 1024 * 1024
    max_functions: U32 = 20_000
    max_function_body_bytes: U32 = 1024 * 1024
    max_locals: U32 = 50_000

    def to_dict(self) -> dict[str, object]:
        """Plain mapping (for TOML/JSON and for `runtime.policy.Policy.from_dict`)."""
        out: dict[str, object] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["host_functions"] = list(self.host_functions)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModulePolicy:
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown policy keys {unknown}")
        kwargs = dict(data)
        if "host_functions" in kwargs:
            kwargs["host_functions"] = tuple(sorted(kwargs["host_functions"]))  # type: ignore[call-overload]
        return cls(**kwargs)  # type: ignore[arg-type]


@wire_message("registry.manifest", version=1, max_size=MAX_TASK_BYTES + 8192)
class ChallengeManifest:
    """One version of one challenge, exactly as the sudo owner signed it."""

    challenge_id: ChallengeId
    name: Annotated[str, Len(1, 128)]
    version: U32
    wasm_sha256: Bytes32
    wasm_size: Annotated[int, Range(1, MAX_MODULE_BYTES)]
    abi_version: U16
    policy: ModulePolicy
    emission_share_ppb: Share
    mechanism_id: U8
    task: Annotated[bytes, Len(0, MAX_TASK_BYTES)]
    activation_epoch: U64
    nonce: U64


# Operations a decided block can apply. `add`/`update` carry a signed manifest; the others carry
# a signed `ChallengeCommand`, whose op is inside the signature so a signed "deactivate" can never
# be replayed as a "remove".
OP_ADD = "add"
OP_UPDATE = "update"
OP_ACTIVATE = "activate"
OP_DEACTIVATE = "deactivate"
OP_REMOVE = "remove"
MANIFEST_OPS = (OP_ADD, OP_UPDATE)
COMMAND_OPS = (OP_ACTIVATE, OP_DEACTIVATE, OP_REMOVE)


@wire_message("registry.command", version=1, max_size=1024)
class ChallengeCommand:
    """A sudo-signed lifecycle command for an existing challenge."""

    op: Annotated[str, Len(1, 16)]
    challenge_id: ChallengeId
    nonce: U64


@wire_message("registry.action", version=1, max_size=MAX_TASK_BYTES + 16384)
class RegistryAction:
    """What a block carries: the op and the sudo-signed envelope (manifest or command) it applies."""

    op: Annotated[str, Len(1, 16)]
    signed: SignedEnvelope


def id_is_valid(challenge_id: str) -> bool:
    """Challenge ids become file names and metric labels, so they are restricted to a safe alphabet."""
    return bool(_ID_RE.match(challenge_id))


def policy_problem(policy: ModulePolicy) -> str | None:
    """A reason the policy is unusable, or None. Checked in the registry so every validator agrees."""
    names = policy.host_functions
    if list(names) != sorted(set(names)):
        return "policy.host_functions must be sorted and unique"
    unknown = sorted(set(names) - HOST_FUNCTIONS)
    if unknown:
        return f"policy allows unknown host functions {unknown} (known: {sorted(HOST_FUNCTIONS)})"
    if policy.fuel == 0:
        return "policy.fuel must be positive"
    if policy.memory_bytes == 0:
        return "policy.memory_bytes must be positive"
    if policy.wall_clock_ms == 0:
        return "policy.wall_clock_ms must be positive"
    if policy.max_module_bytes > MAX_MODULE_BYTES:
        return f"policy.max_module_bytes is over the registry's cap of {MAX_MODULE_BYTES}"
    return None
