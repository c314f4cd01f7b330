"""`python -m bench` (what `make bench` runs): every benchmark module in turn."""

from __future__ import annotations

import importlib
import importlib.util

MODULES = (
    "bench.bench_consensus",
    "bench.bench_runtime",
    "bench.bench_seed",
    "bench.bench_dht",
    "bench.bench_sync",
    "bench.bench_restart",
    "bench.bench_pools",
    "bench.bench_devnet",
    "bench.bench_adversary",
)


def main() -> None:
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        print(f"== {name} ==", flush=True)
        importlib.import_module(name).main()


if __name__ == "__main__":
    main()
