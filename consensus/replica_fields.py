"""The replica's state, declared once for the mixins that share it (view changes, catch-up,
recovery): `Replica.__init__` assigns these; the mixins only read and update them."""

from __future__ import annotations

from typing import Any

from consensus.round_state import RoundState


class ReplicaFields:
    me: bytes
    signer: Any
    cfg: Any
    scheme: Any
    height: int
    view: int
    in_view_change: bool
    deadline: float
    round: RoundState
    validator_sets: Any
    _now: float
