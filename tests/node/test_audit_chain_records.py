"""How `audit replay` maps chain `set_weights` records to app epochs (validator_node.audit.chain_records):
exactly by the epoch a local-chain call names, else (subtensor) by the window of chain blocks
between two weights blocks; a self-weight stands for an empty decided row."""

from __future__ import annotations

from validator_node.audit.chain_records import ChainRecord, match_records
from validator_node.block import MAX_CHAIN_DRIFT
from validator_node.pipeline.messages import EpochWeights, WeightRowMsg

A, B, C = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
E4 = EpochWeights(4, (WeightRowMsg(0, (0, 3), (100, 65535)),), None)
E5 = EpochWeights(5, (WeightRowMsg(0, (0, 2), (65535, 7)),), None)
EMPTY5 = EpochWeights(5, (WeightRowMsg(0, (), ()),), "self_weight")


def rec(
    i: int, hotkey: bytes, block: int, uids: tuple[int, ...], weights: tuple[int, ...], **kw: object
) -> ChainRecord:
    return ChainRecord(i, block, hotkey, 9, 0, uids, weights, kw.pop("signature_ok", True), **kw)  # type: ignore[arg-type]


def verdicts(
    records: list[ChainRecord], decided: dict[int, EpochWeights], start: int = 100, end: int | None = 200
) -> dict[str, tuple[bool, str]]:
    checks = match_records(records, decided, 5, start, end, {A, B})
    return {c.item.split(" (")[0]: (c.ok, c.detail) for c in checks}


def test_records_in_the_window_are_the_epochs_row_or_the_one_before() -> None:
    got = verdicts(
        [
            rec(1, A, 100, (0, 2), (65535, 7)),  # epoch 5's row at its weights block's chain block
            rec(2, B, 150, (0, 3), (100, 65535)),  # epoch 4's, in flight when 5 was decided
            rec(3, A, 199, (0, 2), (65535, 8)),  # neither
            rec(4, A, 100 - MAX_CHAIN_DRIFT - 1, (0, 2), (65535, 8)),  # before the window: not 5's
            rec(5, A, 200, (0, 2), (65535, 8)),  # the next epoch's window
            rec(6, C, 150, (0, 2), (65535, 8)),  # not a validator of the epoch
        ],
        {4: E4, 5: E5},
    )
    assert got["chain record #1"] == (True, "equals epoch 5's decided row")
    assert got["chain record #2"] == (True, "equals epoch 4's decided row")
    assert got["chain record #3"][0] is False and "neither epoch 5's" in got["chain record #3"][1]
    assert {"chain record #4", "chain record #5", "chain record #6"}.isdisjoint(got)
    assert got[f"epoch 5 chain weights of {_ss58(A)}"][1].startswith("1 record(s)")
    assert got[f"epoch 5 chain weights of {_ss58(B)}"][1].startswith("no record")


def test_a_named_epoch_is_mapped_exactly_whatever_the_block() -> None:
    got = verdicts(
        [
            rec(1, A, 5000, (0, 2), (65535, 7), app_epoch=5),  # far outside the window: still epoch 5's
            rec(2, B, 150, (0, 3), (100, 65535), app_epoch=4),  # names epoch 4: that audit's business
            rec(3, B, 150, (0, 3), (100, 65535), app_epoch=5),  # names 5 but carries 4's row
        ],
        {4: E4, 5: E5},
    )
    assert got["chain record #1"][0] is True and "chain record #2" not in got
    assert got["chain record #3"] == (False, "names epoch 5 but is not its decided row")


def test_an_empty_row_is_a_self_weight_and_a_bad_signature_fails() -> None:
    got = verdicts(
        [
            rec(1, A, 120, (9,), (65535,)),  # the submitter's own UID (9)
            rec(2, B, 120, (8,), (65535,)),  # someone else's UID
            rec(3, A, 130, (9,), (65535,), signature_ok=False),
        ],
        {5: EMPTY5},
    )
    assert got["chain record #1"][0] is True
    assert got["chain record #2"][0] is False
    assert got["chain record #3"] == (False, "the hotkey's signature over the call does not verify")


def _ss58(key: bytes) -> str:
    from wire.keys import ss58_of

    return ss58_of(key)
