"""`validator-node devnet`'s run: start the validators, publish the owner's challenges, drive the
miners, print progress, and check afterwards from the validators' own stores that every one decided
the identical chain and weights."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from registry import PPB
from validator_node.devnet.challenges import EXAMPLE_CHALLENGES, SEED_CHALLENGES, publish_registry
from validator_node.devnet.cluster import (
    NETUID,
    DevnetValidator,
    Processes,
    create,
    decided_chain,
    read_status,
    submitted_weights,
)
from validator_node.devnet.miners import PAYLOADS_DIR, Miners
from validator_node.p2p.submit_replies import accepted


def run(
    root: Path,
    validators: int = 4,
    epochs: int = 3,
    timeout: float = 300.0,
    quiet: bool = False,
    epoch_blocks: int = 12,
    miners: int = 6,
    *,
    keep_running: bool = False,
    owner: Any = None,
    owner_source: str = "",
    block_interval: float = 0.5,
) -> dict[str, Any]:
    """Create and run a devnet for `epochs` epochs (or, with `keep_running`, until interrupted);
    return a summary (weights per epoch).

    `owner` (a Hotkey) makes a key of the user's the subnet owner instead of the folder's own
    `owner` wallet: the devnet signs the built-in challenges with it and the user signs the rest,
    which is what makes the devnet a sandbox for docs/sudo-owner.md."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; choose a new --dir")
    vals, _ = create(root, validators, miners=miners, owner_ss58=None if owner is None else owner.ss58)
    logs_dir = root / "logs"
    logs_dir.mkdir(exist_ok=True)
    stop_at = None if keep_running else epochs * epoch_blocks + 1
    cluster = Processes(root, vals, epoch_blocks=epoch_blocks, stop_at=stop_at, block_interval=block_interval)
    started = time.monotonic()
    sim = Miners(root, miners, vals)
    published: list[str] = []
    builtin = {c for c, _ in EXAMPLE_CHALLENGES + SEED_CHALLENGES}
    sheet_printed = False
    reported_epoch = -1
    hinted: set[str] = set()

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
        try:
            while keep_running or time.monotonic() - started < timeout:
                statuses = [read_status(root, v) for v in vals]
                s0 = statuses[0]
                if not published and s0 is not None and s0["height"] >= 1:
                    published = publish_registry(root, vals[0], owner)
                    taken = sum(1 for r in published if accepted(r))
                    say(f"owner published {len(published)} registry actions: {taken} pooled")
                    for r in published:
                        if not accepted(r) or "would be dropped" in r:
                            say(f"  {r}")
                # miners hand submissions to every validator, so all must have applied the
                # activations of the built-in challenges (the owner may have added more)
                ready = all(s is not None and builtin <= set(s.get("challenges", [])) for s in statuses)
                ready = ready and len({s["next_epoch"] for s in statuses if s is not None}) == 1
                ready = ready and s0 is not None and s0.get("epoch_seed") is not None
                if s0 is not None and ready:
                    if keep_running and not sheet_printed and not quiet:
                        sheet_printed = True
                        print(owner_sheet(root, vals, owner, owner_source, epoch_blocks, block_interval))
                    epoch = int(s0["next_epoch"])
                    if (keep_running or epoch < epochs) and (s0["height"] % epoch_blocks) < epoch_blocks - 3:
                        before = sim.sent
                        sim.submit(epoch, bytes.fromhex(s0["epoch_seed"]), s0.get("challenges", []))
                        if sim.sent > before:
                            say(f"miners submitted {sim.sent - before} payloads for epoch {epoch}")
                        for cid in sorted(sim.unanswered - hinted):
                            hinted.add(cid)
                            say(_unanswered_hint(root, cid))
                if keep_running and s0 is not None:
                    reported_epoch = _report_epoch(s0, reported_epoch, say)
                line = "  ".join(
                    f"v{v.index}: h={s['height']} e={s['epoch']} view={s['view']} peers={s['peers']}"
                    if s
                    else f"v{v.index}: starting"
                    for v, s in zip(vals, statuses, strict=True)
                )
                if line != last_line and not (keep_running and sheet_printed):
                    say(line)  # a sandbox's progress is its epoch lines, not a line per block
                last_line = line
                if all(p.poll() is not None for p in procs):
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            if not keep_running:
                raise
            say("interrupted: stopping the validators")
    done = epochs if not keep_running else max(0, reported_epoch + 1)
    return summarise(root, vals, done, procs, started, logs_dir, sim)


def _unanswered_hint(root: Path, cid: str) -> str:
    return (
        f"challenge {cid} is active but no simulated miner knows it: put submission files in "
        f"{root / PAYLOADS_DIR / cid}/ (each epoch miner i submits file i+epoch of them) or run "
        "`validator-node miner submit`; until then its share burns"
    )


def _report_epoch(status: dict[str, Any], reported: int, say: Any) -> int:
    """One line per closed epoch with each challenge's scores, naming a burnt share as such."""
    last = status.get("last_epoch_scores")
    if not last or last["epoch"] <= reported:
        return reported
    parts = []
    for cid, per in sorted(last["scores"].items()):
        parts.append(f"{cid} {per}" if per else f"{cid} (nothing scored: its share burns to the owner)")
    say(f"epoch {last['epoch']} closed; scores (uid: 1e9 = 1.0): " + "; ".join(parts))
    return int(last["epoch"])


def owner_sheet(
    root: Path,
    vals: list[DevnetValidator],
    owner: Any,
    owner_source: str,
    epoch_blocks: int,
    block_interval: float,
) -> str:
    """What a subnet owner needs to work in the devnet, from validator 0's API (docs/sudo-owner.md)."""
    api = f"http://127.0.0.1:{vals[0].api_port}"
    try:
        with urllib.request.urlopen(f"{api}/api/registry", timeout=10) as r:
            reg = json.loads(r.read())
    except (OSError, ValueError) as exc:
        reg = {"owner": "?", "next_nonce": "?", "shares": [], "error": str(exc)}
    if owner is None:
        signer = f"--wallet.name owner --wallet.path {root / 'wallets'}"
    else:
        signer = owner_source or "your key"
    lines = [
        "",
        "== the devnet keeps running (Ctrl-C stops it); what a subnet owner needs ==",
        f"owner hotkey      {reg['owner']}   sign with: {signer}",
        f"netuid            {NETUID}",
        f"next free nonce   {reg['next_nonce']}   (live: curl -s {api}/api/registry)",
    ]
    for sh in reg.get("shares", []):
        lines.append(
            f"free share        mechanism {sh['mechanism_id']}: {sh['free_ppb'] / PPB:.9f} "
            f"(active challenges hold {sh['active_ppb'] / PPB:.9f}; deactivate one to free more)"
        )
    lines.append("validators        (publish to any; each serves the API and a dashboard)")
    for v in vals:
        lines.append(f"  {v.multiaddr()}   http://127.0.0.1:{v.api_port}/")
    lines += [
        f"epochs            {epoch_blocks} blocks of {block_interval:g} s; a miner submits for `next_epoch` "
        f"of {api}/api/status",
        f"miners            wallets miner0..miner{_miner_count(root) - 1} in {root / 'wallets'}; simulated",
        f"                  miners answer a challenge of yours from {root / PAYLOADS_DIR}/<challenge-id>/*",
        "",
    ]
    return "\n".join(lines)


def _miner_count(root: Path) -> int:
    return len(list((root / "wallets").glob("miner*")))


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
                "multiaddr": v.multiaddr(),
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
        "owner": _owner_line(root),
        "logs": str(logs_dir),
    }


def _owner_line(root: Path) -> str:
    """The subnet owner's hotkey, and how to sign as it when the key is the folder's own wallet."""
    try:
        ss58 = json.loads((root / "genesis.json").read_text())["owner"]
    except (OSError, ValueError, KeyError):
        return "?"
    if (root / "wallets" / "owner").exists():
        return f"{ss58} (sign with --wallet.name owner --wallet.path {root / 'wallets'})"
    return f"{ss58} (your --owner-key)"


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
