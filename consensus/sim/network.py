"""Virtual time and a lossy, reordering, partitionable network for the simulator.

Everything is driven by one seeded `random.Random` and one event heap, so a seed reproduces a run
exactly. Faults apply only before `heal_at`; afterwards the network delivers every message within
`max_delay`, which is the partial-synchrony assumption PBFT's liveness needs.

Two latency models. The default ("lan") delays each message uniformly in [min_delay, max_delay].
`WanLinks` ("wan") is a wide-area network, drawn per seed from an RNG of its own:

* every pair of nodes has a round-trip time drawn uniformly from 50-300 ms; a message's
  propagation delay is half of it, plus jitter drawn per message from [0, 10%] of that half;
* every node has an access bandwidth drawn from 10 Mbit/s - 1 Gbit/s (a table, log-spaced); a
  link's bandwidth is the smaller of its two ends', and a message takes its size / that bandwidth
  on the wire. The copies a node sends queue on its uplink (they leave one after another, each
  taking its size / the sender's bandwidth), so a broadcast of a large block to 63 peers costs
  63 times the block at the sender;
* a message's size is its real encoded size plus `WIRE_OVERHEAD`, the node's transport framing
  estimated per message: the consensus channel byte (1), the frame length (4), a yamux header (12),
  a Noise frame length (2) and AEAD tag (16). TCP/IP headers and acks are not counted.

Integers (microseconds, bytes, bytes/s) for every link figure; virtual time is seconds.
`Network` also counts messages and bytes sent by each node.
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


WIRE_OVERHEAD = 1 + 4 + 12 + 2 + 16
RTT_US = (50_000, 300_000)
#: access bandwidths, bytes/s: 10, 25, 50, 100, 250 Mbit/s and 1 Gbit/s
BANDWIDTHS = (1_250_000, 3_125_000, 6_250_000, 12_500_000, 31_250_000, 125_000_000)


class WanLinks:
    """Per-link round-trip times and per-node bandwidths for `n` nodes, drawn from `rng`."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.rtt_us = [[0] * n for _ in range(n)]
        for a in range(n):
            for b in range(a + 1, n):
                self.rtt_us[a][b] = self.rtt_us[b][a] = rng.randint(*RTT_US)
        self.bandwidth = [rng.choice(BANDWIDTHS) for _ in range(n)]
        self.uplink_free = [0] * n  # microseconds: when each node's uplink is idle again

    def max_one_way(self) -> float:
        """An upper bound on a small message's delay (seconds), for liveness bounds."""
        return RTT_US[1] * 11 // 20 / 1e6

    def delay_us(self, src: int, dst: int, size: int, now_us: int, rng: random.Random) -> int:
        """Microseconds from `now_us` until a message of `size` bytes from src reaches dst."""
        start = max(now_us, self.uplink_free[src])
        self.uplink_free[src] = start + size * 1_000_000 // self.bandwidth[src]
        link_bw = min(self.bandwidth[src], self.bandwidth[dst])
        one_way = self.rtt_us[src][dst] // 2
        return start - now_us + size * 1_000_000 // link_bw + one_way + rng.randint(0, one_way // 10)


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
        wan: WanLinks | None = None,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = faults
        self.heal_at = heal_at
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.wan = wan
        self.receivers: dict[int, Callable[[Any], None]] = {}
        self.sent = 0
        self.dropped = 0
        self.sent_by: dict[int, int] = {}  # node -> messages sent
        self.bytes_by: dict[int, int] = {}  # node -> bytes sent (with WIRE_OVERHEAD)

    def _partitioned(self, src: int, dst: int, now: float) -> bool:
        for start, end, side in self.faults.partitions:
            if start <= now < end and ((src in side) != (dst in side)):
                return True
        return False

    def send(self, src: int, dst: int, payload: Any) -> None:
        now = self.loop.now
        self.sent += 1
        self.sent_by[src] = self.sent_by.get(src, 0) + 1
        size = len(payload) + WIRE_OVERHEAD
        self.bytes_by[src] = self.bytes_by.get(src, 0) + size
        faulty = now < self.heal_at
        if faulty and (self.rng.random() < self.faults.drop or self._partitioned(src, dst, now)):
            self.dropped += 1
            return
        copies = 2 if faulty and self.rng.random() < self.faults.duplicate else 1
        if self.wan is not None:
            now_us = round(now * 1_000_000)
            for _ in range(copies):
                delay = self.wan.delay_us(src, dst, size, now_us, self.rng)
                if faulty and self.faults.reorder:
                    delay += self.rng.randint(0, 8 * self.wan.rtt_us[src][dst] // 2)
                self.loop.at(now + delay / 1_000_000, lambda d=dst, p=payload: self._deliver(d, p))
            return
        hi = self.max_delay * (8 if faulty and self.faults.reorder else 1)
        for _ in range(copies):
            delay = self.rng.uniform(self.min_delay, hi)
            self.loop.at(now + delay, lambda d=dst, p=payload: self._deliver(d, p))

    def _deliver(self, dst: int, payload: Any) -> None:
        recv = self.receivers.get(dst)
        if recv is not None:
            recv(payload)
