"""The node's metrics: counters and gauges with labels, histograms, exposed by prometheus_client.

Counters and gauges keep their values in plain dicts, because the node reads them back (the API's
evaluation table, status, tests) and every refusal path increments one labelled with its reason:
a collector hands them to prometheus_client's registry, which renders the exposition format.
Histograms (decision latency, evaluation time and fuel) are prometheus_client's own. The node is
single-threaded on trio, so nothing here needs a lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.metrics_core import Metric

# no `_created` series beside each histogram: a scrape needs counts, not when the node started them
disable_created_metrics()

Labels = tuple[tuple[str, str], ...]

# bucket bounds per histogram (anything not named here gets prometheus_client's defaults)
BUCKETS: dict[str, tuple[float, ...]] = {
    # a decided height: from when it was due (the previous decision + the block interval) to its
    # commit certificate, on a LAN to a WAN
    "decision_latency_seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    # one evaluation in the sandbox: microseconds for a toy, seconds at the wall-clock guard
    "evaluation_duration_seconds": (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60),
    # wasmtime fuel of one evaluation: 1e3 .. 1e10 (the default policy allows 1e9)
    "evaluation_fuel": tuple(float(10**e) for e in range(3, 11)),
}


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


class Metrics:
    def __init__(self, prefix: str = "validator_") -> None:
        self.prefix = prefix
        self.counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_DictCollector(self))
        self._histograms: dict[str, Histogram] = {}

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        series = self.counters[name]
        k = _key(labels)
        series[k] = series.get(k, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[name][_key(labels)] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """One observation of a histogram; its label names are fixed by the first call."""
        h = self._histograms.get(name)
        if h is None:
            h = Histogram(
                self.prefix + name,
                name.replace("_", " "),
                labelnames=sorted(labels),
                buckets=BUCKETS.get(name, Histogram.DEFAULT_BUCKETS),
                registry=self.registry,
            )
            self._histograms[name] = h
        (h.labels(**labels) if labels else h).observe(value)

    def get(self, name: str, **labels: str) -> float:
        k = _key(labels)
        return self.counters.get(name, {}).get(k, self.gauges.get(name, {}).get(k, 0))

    def total(self, name: str) -> float:
        return sum(self.counters.get(name, {}).values())

    def render(self) -> str:
        return generate_latest(self.registry).decode()


class _DictCollector:
    """Hands the dict-held counters and gauges to prometheus_client at each scrape. A series may
    carry any labels (a counter incremented with and without a reason is still one family)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        prefix = self.metrics.prefix
        for name in sorted(self.metrics.counters):
            base = prefix + name.removesuffix("_total")
            family = Metric(base, name.replace("_", " "), "counter")
            for labels, value in sorted(self.metrics.counters[name].items()):
                family.add_sample(base + "_total", dict(labels), value)
            yield family
        for name in sorted(self.metrics.gauges):
            family = Metric(prefix + name, name.replace("_", " "), "gauge")
            for labels, value in sorted(self.metrics.gauges[name].items()):
                family.add_sample(prefix + name, dict(labels), value)
            yield family
