"""Virtual time and a lossy, reordering, partitionable network for the simulator.

Everything is driven by one seeded `random.Random` and one event heap, so a seed reproduces a run
exactly. Faults apply only before `heal_at`; afterwards the network delivers every message within
`max_delay`, which is the partial-synchrony assumption PBFT's liveness needs.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NetworkFaults:
    drop: float = 0.0  # probability a message is lost
    duplicate: float = 0.0  # probability a message is delivered twice
    reorder: bool = False  # widen the delay range so messages overtake each other
    partitions: list[tuple[float, float, frozenset[int]]] = field(default_factory=list)


@dataclass
class EventLoop:
    now: float = 0.0
    _heap: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: int = 0
    events: int = 0

    def at(self, when: float, fn: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn))

    def run_until(self, end: float, stop: Callable[[], bool]) -> None:
        while self._heap and self._heap[0][0] <= end:
            when, _, fn = heapq.heappop(self._heap)
            self.now = when
            self.events += 1
            fn()
            if stop():
                return
        self.now = max(self.now, end) if not self._heap else self.now


class Network:
    """Point-to-point delivery between node indices, with faults until `heal_at`."""

    def __init__(
        self,
        loop: EventLoop,
        rng: random.Random,
        faults: NetworkFaults,
        heal_at: float,
        min_delay: float = 0.002,
        max_delay: float = 0.030,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self.heal_at = heal_at
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.receivers: dict[int, Callable[[Any], None]] = {}
        self.sent = 0
        self.dropped = 0

    def _partitioned(self, src: int, dst: int, now: float) -> bool:
        for start, end, side in self.faults.partitions:
            if start <= now < end and ((src in side) != (dst in side)):
                return True
        return False

    def send(self, src: int, dst: int, payload: Any) -> None:
        now = self.loop.now
        self.sent += 1
        faulty = now < self.heal_at
        if faulty and (self.rng.random() < self.faults.drop or self._partitioned(src, dst, now)):
            self.dropped += 1
            return
        copies = 2 if faulty and self.rng.random() < self.faults.duplicate else 1
        hi = self.max_delay * (8 if faulty and self.faults.reorder else 1)
        for _ in range(copies):
            delay = self.rng.uniform(self.min_delay, hi)
            self.loop.at(now + delay, lambda d=dst, p=payload: self._deliver(d, p))

    def _deliver(self, dst: int, payload: Any) -> None:
        recv = self.receivers.get(dst)
        if recv is not None:
            recv(payload)
