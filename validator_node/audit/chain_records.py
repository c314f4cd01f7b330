"""The chain's `set_weights` records, and how an auditor maps each to the app epoch it carries.

The local chain's signed call names the app epoch (`Chain.set_weights(app_epoch=)`, call payload
version 2), so its records map exactly. A subtensor `set_weights` names none (the extrinsic has
netuid, uids, weights and version_key), so the mapping there is by chain block and content. A node
hands the chain only the newest decided epoch's rows, after their weights block is decided, and
that block's header names the chain block its proposer saw (`Block.chain_block`, at most
`MAX_CHAIN_DRIFT` ahead of any validator's view). So a record of epoch E lands at or after that
chain block, and before the next epoch's weights block, unless it was in flight (or rate-limited)
when that one was decided: every record in E's window [chain block of E's weights block - drift,
chain block of E+1's) must equal E's decided row of its mechanism, or E-1's. An empty decided row
(the fallback) is submitted as a self-weight: the submitter's own UID at 65535.

The local chain records every accepted call with the hotkey's sr25519 signature over its payload
(`LocalChain.call_payload`), which is checked here; subtensor's records are extrinsics signed by
the hotkey, checked by the chain itself (an auditor reads them from an archive node's blocks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from validator_node.audit.report import Check
from validator_node.block import MAX_CHAIN_DRIFT
from validator_node.pipeline.messages import EpochWeights
from wire.keys import ss58_of

SELF_WEIGHT = 65535


@dataclass(frozen=True)
class ChainRecord:
    id: int
    block: int
    hotkey: bytes
    uid: int
    mechid: int
    uids: tuple[int, ...]
    weights: tuple[int, ...]  # as submitted (u16)
    signature_ok: bool
    app_epoch: int | None = None  # named in the signed call (the local chain); None: map by block


def local_chain_records(path: Path) -> list[ChainRecord]:
    """Every accepted `set_weights` on an embedded local chain, its signature checked."""
    from validator_node.chain.local import LocalChain
    from wire.keys import public_key_of, verify

    if not Path(path).exists():
        raise FileNotFoundError(f"no local chain at {path}")
    out = []
    with LocalChain(path) as chain:
        for r in chain.weight_records():
            key = public_key_of(r.hotkey)
            payload = chain.call_payload(r.mechid, r.uids, r.submitted, r.version_key, r.app_epoch)
            out.append(
                ChainRecord(
                    id=r.id,
                    block=r.block,
                    hotkey=key,
                    uid=r.uid,
                    mechid=r.mechid,
                    uids=tuple(r.uids),
                    weights=tuple(r.submitted),
                    signature_ok=verify(key, payload, r.signature),
                    app_epoch=r.app_epoch,
                )
            )
    return out


def _row_of(
    weights: EpochWeights | None, mechid: int, uid: int
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    if weights is None:
        return None
    for row in weights.rows:
        if row.mechid == mechid:
            return (row.uids, row.weights) if row.uids else ((uid,), (SELF_WEIGHT,))
    return None


def match_records(
    records: Iterable[ChainRecord],
    decided: Mapping[int, EpochWeights],
    epoch: int,
    start: int,
    end: int | None,
    members: set[bytes],
) -> list[Check]:
    """A check per record in `epoch`'s window (by validators of the epoch or the next), and one
    per member: how many of its records carry the epoch's rows."""
    checks = []
    matched: dict[bytes, int] = {}
    lo = max(0, start - MAX_CHAIN_DRIFT)
    for rec in records:
        if rec.hotkey not in members:
            continue
        if rec.app_epoch is not None:
            if rec.app_epoch != epoch:  # signed for another epoch: that epoch's audit checks it
                continue
        elif rec.block < lo or (end is not None and rec.block >= end):
            continue
        who = f"chain record #{rec.id} ({ss58_of(rec.hotkey)}, block {rec.block}, mechanism {rec.mechid})"
        figures = {"uids": list(rec.uids), "weights": list(rec.weights), "block": rec.block}
        if not rec.signature_ok:
            checks.append(Check(who, False, "the hotkey's signature over the call does not verify", figures))
            continue
        found = None
        for e in (epoch,) if rec.app_epoch is not None else (epoch, epoch - 1):
            if _row_of(decided.get(e), rec.mechid, rec.uid) == (rec.uids, rec.weights):
                found = e
                break
        if found is None:
            named = rec.app_epoch is not None
            why = (
                f"names epoch {epoch} but is not its decided row"
                if named
                else (f"is neither epoch {epoch}'s decided row nor epoch {epoch - 1}'s")
            )
            checks.append(Check(who, False, why, figures))
            continue
        matched[rec.hotkey] = matched.get(rec.hotkey, 0) + (found == epoch)
        checks.append(Check(who, True, f"equals epoch {found}'s decided row", {**figures, "epoch": found}))
    window = f"epoch {epoch} (named in the call, or in chain blocks [{lo}, {'...' if end is None else end}))"
    for hk in sorted(members):
        n = matched.get(hk, 0)
        checks.append(
            Check(
                f"epoch {epoch} chain weights of {ss58_of(hk)}",
                True,
                f"{n} record(s) with the decided rows of {window}" if n else f"no record for {window}",
                {"records": n},
            )
        )
    return checks
