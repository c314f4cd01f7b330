"""Counters and gauges with labels, rendered in the Prometheus text format.

Deliberately tiny (no client library): the node is single-threaded on trio, so plain dicts are
enough, and every refusal path in the node increments a counter labelled with its reason.
"""

from __future__ import annotations

from collections import defaultdict


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class Metrics:
    def __init__(self, prefix: str = "validator_") -> None:
        self.prefix = prefix
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self.gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        series = self.counters[name]
        k = _key(labels)
        series[k] = series.get(k, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name][_key(labels)] = value

    def get(self, name: str, **labels: str) -> float:
        k = _key(labels)
        return self.counters.get(name, {}).get(k, self.gauges.get(name, {}).get(k, 0))

    def total(self, name: str) -> float:
        return sum(self.counters.get(name, {}).values())

    def render(self) -> str:
        lines: list[str] = []
        for kind, table in (("counter", self.counters), ("gauge", self.gauges)):
            for name in sorted(table):
                full = self.prefix + name
                lines.append(f"# TYPE {full} {kind}")
                for labels, value in sorted(table[name].items()):
                    lab = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{full}{{{lab}}} {value:g}" if lab else f"{full} {value:g}")
        return "\n".join(lines) + "\n"
