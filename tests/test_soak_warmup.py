"""The memory soak judges a node only after its caches are full, and those fill by decided height:
a loaded host decided 30-50 heights a minute where an idle one decided 111, so a warm-up counted
in minutes alone judged still-filling caches as growth (bench/soak_memory.py's docstring)."""

from __future__ import annotations

from bench.soak_memory import Sample, judge, warmup_minute


def _samples(per_minute: int) -> list[Sample]:
    # RSS rises 1 MB a minute until height 1200 (a cache filling by height), then stays flat
    out = []
    for m in range(1, 41):
        h = m * per_minute
        rss = 150.0 + min(h, 1200) / per_minute
        out.append(Sample(float(m), [rss] * 4, [h] * 4))
    return out


def test_warmup_waits_for_the_heights_that_fill_the_caches() -> None:
    slow = _samples(40)  # 1200 heights at minute 30
    assert warmup_minute(slow, 13.3, 1200) == 30.0
    assert not judge(slow, 0, 13.3, 6.0, 4.0).ok  # minute-only warm-up: filling judged as growth
    assert judge(slow, 0, warmup_minute(slow, 13.3, 1200), 6.0, 4.0).ok


def test_warmup_keeps_its_floor_on_a_fast_devnet_and_is_never_reached_on_a_stalled_one() -> None:
    assert warmup_minute(_samples(111), 13.3, 1200) == 14.0
    stalled = [Sample(float(m), [150.0] * 4, [500] * 4) for m in range(1, 41)]
    assert warmup_minute(stalled, 13.3, 1200) == float("inf")
    assert not judge(stalled, 0, float("inf"), 6.0, 4.0).ok  # nothing after warm-up: no pass
