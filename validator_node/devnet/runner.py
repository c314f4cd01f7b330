"""`validator-node devnet`'s run: start the validators, publish the owner's challenges, drive the
miners, print progress, and check afterwards from the validators' own stores that every one decided
the identical chain and weights."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from validator_node.devnet.challenges import EXAMPLE_CHALLENGES, SEED_CHALLENGES, publish_registry
from validator_node.devnet.cluster import (
    DevnetValidator,
    Processes,
    create,
    decided_chain,
    read_status,
    submitted_weights,
)
from validator_node.devnet.miners import Miners
from validator_node.p2p.submit_replies import accepted


def run(
    root: Path,
    validators: int = 4,
    epochs: int = 3,
    timeout: float = 300.0,
    quiet: bool = False,
    epoch_blocks: int = 12,
    miners: int = 6,
) -> dict[str, Any]:
    """Create and run a devnet for `epochs` epochs; return a summary (weights per epoch)."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose a new --dir")
    vals, _ = create(root, validators, miners=miners)
    logs_dir = root / "logs"
    logs_dir.mkdir(exist_ok=True)
    stop_at = epochs * epoch_blocks + 1
    cluster = Processes(root, vals, epoch_blocks=epoch_blocks, stop_at=stop_at)
    started = time.monotonic()
    sim = Miners(root, miners, vals)
    published: list[str] = []

    def say(msg: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - started:6.1f}s] {msg}", flush=True)

    with cluster:
        say(f"genesis {cluster.genesis_hash} ({cluster.genesis_path}), pinned by every validator")
        cluster.start_all()
        procs = list(cluster.procs.values())
        say(
            f"dashboard: http://127.0.0.1:{vals[0].api_port}/ (each validator serves one; logs in {logs_dir})"
        )
        last_line = ""
        while time.monotonic() - started < timeout:
            statuses = [read_status(root, v) for v in vals]
            if not published and statuses[0] is not None and statuses[0]["height"] >= 1:
                published = publish_registry(root, vals[0])
                taken = sum(1 for r in published if accepted(r))
                say(f"owner published {len(published)} registry actions: {taken} pooled")
                for r in published:
                    if not accepted(r) or "would be dropped" in r:
                        say(f"  {r}")
            s0 = statuses[0]
            # miners hand submissions to every validator, so all must have applied the activation
            ready = all(
                s is not None
                and len(s.get("challenges", [])) == len(EXAMPLE_CHALLENGES) + len(SEED_CHALLENGES)
                for s in statuses
            )
            ready = ready and len({s["next_epoch"] for s in statuses if s is not None}) == 1
            ready = ready and s0 is not None and s0.get("epoch_seed") is not None
            if s0 is not None and ready:
                epoch = int(s0["next_epoch"])
                if epoch < epochs and (s0["height"] % epoch_blocks) < epoch_blocks - 3:  # room to score
                    before = sim.sent
                    sim.submit(epoch, bytes.fromhex(s0["epoch_seed"]))
                    if sim.sent > before:
                        say(f"miners submitted {sim.sent - before} payloads for epoch {epoch}")
            line = "  ".join(
                f"v{v.index}: h={s['height']} e={s['epoch']} view={s['view']} peers={s['peers']}"
                if s
                else f"v{v.index}: starting"
                for v, s in zip(vals, statuses, strict=True)
            )
            if line != last_line:
                say(line)
                last_line = line
            if all(p.poll() is not None for p in procs):
                break
            time.sleep(0.5)
    return summarise(root, vals, epochs, procs, started, logs_dir, sim)


def summarise(
    root: Path,
    vals: list[DevnetValidator],
    epochs: int,
    procs: list[subprocess.Popen[bytes]],
    started: float,
    logs_dir: Path,
    sim: Miners,
) -> dict[str, Any]:
    chains = {v.index: decided_chain(root, v) for v in vals}
    common = min((len(c) for c in chains.values()), default=0)
    chain_identical = common > 0 and all(c[:common] == chains[0][:common] for c in chains.values())
    weights = {v.index: submitted_weights(root, v) for v in vals}
    per_epoch = []
    all_identical = True
    for e in range(epochs):
        by_validator = {}
        for v in vals:
            rows = [w for w in weights[v.index] if w["epoch"] == e and w["result"] == "ok"]
            by_validator[v.ss58] = {
                str(u): x for r in rows for u, x in zip(r["uids"], r["weights"], strict=True)
            }
        vectors = list(by_validator.values())
        identical = len(vectors) == len(vals) and all(x == vectors[0] and x for x in vectors)
        all_identical &= identical
        per_epoch.append({"epoch": e, "weights": by_validator, "identical": identical})
    # the last closed epoch's per-challenge scores as each validator derived them
    last_scores = {v.ss58: (read_status(root, v) or {}).get("last_epoch_scores") for v in vals}
    scored = [x for x in last_scores.values() if x]
    scores_identical = len(scored) == len(vals) and all(x == scored[0] for x in scored)
    return {
        "last_epoch_scores": scored[0] if scores_identical else last_scores,
        "scores_identical": scores_identical,
        "challenges_scored": sorted(c for c, per in (scored[0]["scores"] if scored else {}).items() if per),
        "validators": [
            {
                "index": v.index,
                "hotkey": v.ss58,
                "peer_id": v.peer_id,
                "port": v.port,
                "dashboard": f"http://127.0.0.1:{v.api_port}/",
                "decided": len(chains[v.index]),
            }
            for v in vals
        ],
        "epochs": per_epoch,
        "identical": all_identical and chain_identical,
        "decided_heights": common,
        "chain_identical": chain_identical,
        "chain_accepted_set_weights": _chain_records(root),
        "submissions_sent": sim.sent,
        "submissions_refused": sim.refused[:10],
        "tip": chains[0][common - 1][1] if common else None,
        "exit_codes": [p.returncode for p in procs],
        "elapsed_s": round(time.monotonic() - started, 1),
        "dir": str(root),
        "logs": str(logs_dir),
    }


def _chain_records(root: Path) -> int:
    from validator_node.chain.local import LocalChain

    try:
        chain = LocalChain(root / "chain.sqlite")
    except Exception:
        return 0
    try:
        return len(chain.weight_records())
    finally:
        chain.close()
