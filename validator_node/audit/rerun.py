"""Re-running an admitted submission's evaluation on the auditor's machine (`--rerun-evaluations`).

The same sandbox and policy a validator uses (`runtime.sandbox`), the decided seed and height, the
payload inline or fetched by its reference's hash; the score is what a validator would attest
(-1 for a failed evaluation). A wall-clock timeout is local, as on a node: retried once with 4x
the time, then reported as "could not evaluate here", never as a score.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import trio

from validator_node.audit.sources import Source, SourceError


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Rerunner:
    """Compiles each (module, policy) once in a sandbox under `work_dir` (no audit log)."""

    def __init__(self, work_dir: Path, source: Source) -> None:
        self.work_dir = Path(work_dir)
        self.source = source
        self._sandbox: Any = None
        self._loaded: dict[bytes, Any] = {}

    async def score(self, state: Any, sub: Any) -> tuple[int | None, str]:
        """The score this machine's sandbox gives the submission (-1 for a failed evaluation,
        as a validator attests it), or None and why it could not run."""
        from runtime import errors
        from runtime.policy import Policy
        from runtime.sandbox import Sandbox

        entry = state.registry.get(sub.challenge_id)
        wasm = None if entry is None else state.modules.get(entry.manifest.wasm_sha256)
        if entry is None or wasm is None:
            return None, "the challenge's module is not in the state"
        payload = sub.payload
        if sub.payload_ref is not None:
            ref = sub.payload_ref
            try:
                payload = await self.source.content(ref.sha256, size=ref.size, key=ref.dht_key)
            except SourceError as exc:
                return None, f"payload: {exc}"
            if payload is None:
                return None, f"payload {ref.sha256.hex()[:16]}... is not served by {self.source.label}"
            if _sha(payload) != ref.sha256 or len(payload) != ref.size:
                return (
                    None,
                    f"payload {ref.sha256.hex()[:16]}...: the bytes served do not match the reference",
                )
        manifest = entry.manifest
        policy = Policy.from_dict(manifest.policy.to_dict())
        if self._sandbox is None:
            self._sandbox = Sandbox(self.work_dir)
        key = manifest.wasm_sha256 + _sha(repr(sorted(manifest.policy.to_dict().items())).encode())
        if key not in self._loaded:
            self._loaded[key] = await trio.to_thread.run_sync(self._sandbox.load, wasm, policy)
        loaded = self._loaded[key]

        def run(p: Any) -> Any:
            return self._sandbox.evaluate(
                loaded, manifest.task, payload, policy=p, seed=sub.seed, block_height=sub.height
            )

        result = await trio.to_thread.run_sync(run, policy)
        if result.error_kind == errors.TIMEOUT:  # a local wall clock, as the node retries it
            result = await trio.to_thread.run_sync(
                run, dataclasses.replace(policy, wall_clock_ms=4 * policy.wall_clock_ms)
            )
        if result.error_kind in (errors.TIMEOUT, errors.INTERNAL):
            return None, f"could not evaluate here: {result.error_kind}"
        ok = result.ok and result.score is not None
        return (result.score if ok else -1), ("" if ok else f"the module fails: {result.error_kind}")
