"""Error kinds: the stable, machine-readable names of every way a module or an evaluation can fail.

They are part of what validators agree on (an attestation carries the kind), so they are plain
strings that never change meaning. `timeout` is the only kind that depends on the local clock.
"""

from __future__ import annotations

# evaluation outcomes
OUT_OF_FUEL = "out_of_fuel"
MEMORY_LIMIT = "memory_limit"
TIMEOUT = "timeout"  # local wall-clock guard; not deterministic
STACK_OVERFLOW = "stack_overflow"
TRAP = "trap"
BAD_OUTPUT = "bad_output"  # out-of-range score, out-of-bounds pointer, oversized packed output
MODULE_ERROR = "module_error"  # evaluate() returned a negative error code
INPUT_TOO_LARGE = "input_too_large"
HOST_LIMIT = "host_limit"  # host-call count or log-byte cap exceeded, or bad pointer given to a host call
RESOURCE_LIMIT = "resource_limit"  # instantiation refused by store limits (tables, instances)
INTERNAL = "internal"  # a bug on the host side; never the module's fault

# registration (validation) refusals
INVALID_MODULE = "invalid_module"  # malformed bytes, fails wasm validation, uses a disabled feature
TOO_LARGE = "too_large"  # over the module size cap
TOO_COMPLEX = "too_complex"  # too many functions / body too big / too many locals to compile safely
FORBIDDEN_IMPORT = "forbidden_import"
MISSING_EXPORT = "missing_export"
BAD_SIGNATURE = "bad_signature"
ABI_VERSION = "abi_version"

#: kinds whose verdict every honest validator reproduces exactly
DETERMINISTIC_KINDS = frozenset(
    {
        OUT_OF_FUEL,
        MEMORY_LIMIT,
        STACK_OVERFLOW,
        TRAP,
        BAD_OUTPUT,
        MODULE_ERROR,
        INPUT_TOO_LARGE,
        HOST_LIMIT,
        RESOURCE_LIMIT,
        INVALID_MODULE,
        TOO_LARGE,
        TOO_COMPLEX,
        FORBIDDEN_IMPORT,
        MISSING_EXPORT,
        BAD_SIGNATURE,
        ABI_VERSION,
    }
)


class ModuleRejected(Exception):
    """A module refused at registration; `kind` is one of the registration kinds above."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
