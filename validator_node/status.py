"""What a node tells its operator about itself: `status()` (the API's `/api/status`), and
`status.json` and `metrics.prom` in its data directory, rewritten every `status_interval`.

A mixin of `ValidatorNode`, apart from the consensus loop: nothing here may cost the node more
than a log line and a counter (a full disk stops these files, never the node).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("validator_node")


class StatusDuty:
    """Mixin: the node provides cfg, data_dir, store, replica, app, transport, hotkey, metrics,
    api_port, last_weights(_result), _chain_block and _voting_halted."""

    cfg: Any
    data_dir: Path
    store: Any
    replica: Any
    app: Any
    transport: Any
    hotkey: Any
    metrics: Any
    api_port: int | None
    last_weights: dict[str, Any] | None
    last_weights_result: dict[str, Any] | None
    _chain_block: int
    _voting_halted: str | None
    _status_failing = False

    async def _status_writer(self) -> None:
        while True:
            self._try_write_status()
            await trio.sleep(self.cfg.status_interval)

    def _try_write_status(self) -> None:
        """status.json and metrics.prom are for operators: a full disk costs them (one log line
        when writes start failing, one when they work again, a counter), never the node."""
        try:
            self._write_status()
        except OSError as exc:
            self.metrics.inc("store_write_failed_total", what="status")
            if not self._status_failing:
                log.error("cannot write status.json / metrics.prom in %s: %s", self.data_dir, exc)
            self._status_failing = True
            with contextlib.suppress(OSError):
                (self.data_dir / "status.tmp").unlink(missing_ok=True)
        else:
            if self._status_failing:
                log.info("status.json is written again")
            self._status_failing = False

    def status(self) -> dict[str, Any]:
        tip_h, tip_hash = self.store.tip()
        r = self.replica
        return {
            "hotkey": self.hotkey.ss58,
            "peer_id": self.transport.peer_id,
            "listen": self.transport.addrs(),  # multiaddrs with /p2p/<peer id>: dial these
            "height": tip_h,
            "tip": tip_hash.hex(),
            "view": r.view,
            "leader": self.app.vset_for(r.height).leader(r.height, r.view).hex(),
            "peers": len(self.transport.book.links),
            "chain_block": self._chain_block,
            "evidence": self.store.evidence_count(),
            "epoch": self.app.state.epoch_of(max(tip_h, 1)),
            "next_epoch": self.app.state.epoch_of(tip_h + 1),
            "epoch_seed": _hex_or_none(self.app.epoch_seed(self.app.state.epoch_of(tip_h + 1))),
            "challenges": [m.challenge_id for m in self.app.state.registry.active()],
            "submissions": len(self.app.state.submissions),
            "last_weights": self.last_weights,
            "last_weights_result": self.last_weights_result,
            "epoch_blocks": self.app.state.epoch_blocks,
            "version": _version(),
            "voting_halted": self._voting_halted,
            "last_epoch_scores": None
            if self.app.last_epoch_scores is None
            else {
                "epoch": self.app.last_epoch_scores[0],
                "scores": {
                    c: {str(u): v for u, v in sorted(p.items())}
                    for c, p in self.app.last_epoch_scores[1].items()
                },
            },
            "genesis": self.app.genesis_hash.hex(),
            "api": None if self.api_port is None else f"http://{self.cfg.api_host}:{self.api_port}/",
            "time": time.time(),
        }

    def _write_status(self) -> None:
        path = self.data_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), sort_keys=True))
        os.replace(tmp, path)
        (self.data_dir / "metrics.prom").write_text(self.metrics.render())


def _hex_or_none(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("platform-validator")
    except PackageNotFoundError:
        return "unknown"
