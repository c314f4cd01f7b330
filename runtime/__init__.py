"""wasmtime sandbox for challenge modules (ABI v1): engine config, policy, validation, evaluation,
host functions, compiled-module cache and the hash-chained audit log.

Import the pieces from their modules (`runtime.sandbox`, `runtime.validation`, ...); this package
init stays empty so that importing `runtime.policy` does not load wasmtime.
"""
