"""Budgets for what one peer, and all peers together, can make this node pay on the p2p side.

Three small pieces, shared by the consensus link, the checkpoint protocol and the submit protocol
(p2p/host.py):

* `TokenBucket`: a rate with a burst (frames/s, bytes/s, requests/s). The clock is injected, so
  unit tests drive time by hand and nothing here reads a clock of its own.
* `PeerBudgets`: one set of buckets per peer, in a table of bounded size. Peer ids are free to
  mint, so the table evicts its least recently used peer when full; a fresh peer id therefore
  buys a fresh budget, which is why every per-peer budget here sits behind a *global* one.
* `ConcurrencyLimit`: at most `limit` holders at once, in total and per key, with an optional
  weight (bytes in flight). `try_acquire` never waits: a request over the limit is refused at
  once, so a flood costs the node a refusal, not a queue of waiting tasks.

None of this is consensus state: budgets decide only what this node spends, never what is valid.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; starts full.

    `take(n)` spends n tokens if there are n, else spends nothing and returns False. A cost over
    `burst` can never pass, so a bucket for bytes must have a burst of at least the largest
    legal frame.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, n: float = 1.0) -> bool:
        self._refill()
        if n > self._tokens:
            return False
        self._tokens -= n
        return True


@dataclass(frozen=True)
class Rate:
    """A budget: `per_s` a second after a burst of `burst`."""

    per_s: float
    burst: float


class PeerBudgets(Generic[K]):
    """Per-peer buckets (one per named rate, e.g. frames and bytes), at most `max_peers` peers.

    `allow(peer, frames=1, bytes=n)` passes only if every named cost fits its bucket, and then
    takes all of them (nothing is spent on a refusal).
    """

    def __init__(self, rates: dict[str, Rate], clock: Callable[[], float], max_peers: int = 4096) -> None:
        self.rates = rates
        self.max_peers = max_peers
        self._clock = clock
        self._peers: OrderedDict[K, dict[str, TokenBucket]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._peers)

    def _buckets(self, peer: K) -> dict[str, TokenBucket]:
        buckets = self._peers.get(peer)
        if buckets is None:
            while len(self._peers) >= self.max_peers:
                self._peers.popitem(last=False)  # least recently used
            buckets = {name: TokenBucket(r.per_s, r.burst, self._clock) for name, r in self.rates.items()}
            self._peers[peer] = buckets
        else:
            self._peers.move_to_end(peer)
        return buckets

    def allow(self, peer: K, **costs: float) -> bool:
        buckets = self._buckets(peer)
        if any(costs[name] > buckets[name].tokens for name in costs):
            return False
        for name, n in costs.items():
            buckets[name].take(n)
        return True

    def forget(self, peer: K) -> None:
        self._peers.pop(peer, None)


class ConcurrencyLimit(Generic[K]):
    """At most `total` weight held at once over all keys, and `per_key` by any one key.

    The weight is 1 for "streams" and the frame size for "bytes in flight". Use `hold` as a
    context manager; it raises `OverLimit` at once instead of waiting.
    """

    def __init__(self, total: float, per_key: float | None = None, max_keys: int = 65536) -> None:
        self.total = total
        self.per_key = per_key if per_key is not None else total
        self.max_keys = max_keys
        self.held = 0.0
        self.peak = 0.0  # the most ever held at once (tests and metrics show the bound holds)
        self._by_key: dict[K, float] = {}

    def held_by(self, key: K) -> float:
        return self._by_key.get(key, 0.0)

    def try_acquire(self, key: K, weight: float = 1.0) -> bool:
        mine = self._by_key.get(key, 0.0)
        if self.held + weight > self.total or mine + weight > self.per_key:
            return False
        if mine == 0 and len(self._by_key) >= self.max_keys:
            return False  # cannot happen while total <= max_keys holders; a bound all the same
        self.held += weight
        self.peak = max(self.peak, self.held)
        self._by_key[key] = mine + weight
        return True

    def release(self, key: K, weight: float = 1.0) -> None:
        mine = self._by_key.get(key, 0.0) - weight
        self.held = max(0.0, self.held - weight)
        if mine <= 0:
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = mine

    @contextmanager
    def hold(self, key: K, weight: float = 1.0) -> Iterator[None]:
        if not self.try_acquire(key, weight):
            raise OverLimit(f"over the limit ({self.held:g} of {self.total:g} held)")
        try:
            yield
        finally:
            self.release(key, weight)


class OverLimit(Exception):
    """A `ConcurrencyLimit` is full: the request is refused, not queued."""


class RateLimitedLog:
    """At most one log line per key per `every` seconds, saying how many events it stands for.

    A flood must not turn into a flood of log lines (disk is a cost too): the first event logs,
    later ones within `every` seconds are only counted and reported with the next line.
    """

    def __init__(self, clock: Callable[[], float], every: float = 10.0, max_keys: int = 1024) -> None:
        self._clock = clock
        self.every = every
        self.max_keys = max_keys
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def due(self, key: Hashable) -> int:
        """0 if this event should not be logged; else how many events the line stands for."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every:
            self._last[key] = (last[0], last[1] + 1)
            return 0
        count = 1 if last is None else last[1] + 1
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return count


MiB = 1024 * 1024


@dataclass(frozen=True)
class P2PLimits:
    """Every p2p budget of a node, with the honest traffic each one is sized against.

    **Consensus link, inbound, per validator** (checked on each frame before it is decoded, so a
    frame over budget costs a length check; keyed by hotkey, so a reconnect keeps its budget).
    What an honest validator sends us per height and view, at 64 validators:

    * a proposal when it leads: one frame <= `ProposalPacket` cap (6 MiB: a block of at most
      MAX_BLOCK_SIZE = 1 MiB plus a view-change justification), so 1 frame;
    * a prepare and a commit vote (< 1 KiB each) and at most one view change (<= 1 MiB + 80 KiB):
      3 frames;
    * catch-up: up to `sync_batch` = 32 decided blocks (<= 1 MiB + 80 KiB each) per sync request
      we send it; the sender's own budget (consensus/send_budget.py) holds this to 32 blocks/s
      and 4 MiB/s per recipient after a 2 s burst (64 blocks, 8 MiB).

    With blocks no faster than one per 0.1 s (10 heights/s, ten times the default interval) that
    is 10 x 4 = 40 frames/s plus 32 decision frames/s: 72 frames/s, and we allow `link_frames` =
    128/s with a burst of 512 (over a whole sync batch plus a height's messages). In bytes: a
    leader sending a full 1 MiB block every height at 10 heights/s is 10 MiB/s (it leads one
    height in n, so this is a bound, not the average), a view change carrying a prepared 1 MiB
    block at every height another 10.8 MiB/s (also a bound: view changes follow timeouts), plus
    catch-up at 4 MiB/s: 24.8 MiB/s (tests/node/test_budgets.py replays this for ten minutes),
    and we allow `link_bytes` = 32 MiB/s with a burst of 64 MiB (more than one 8 MiB frame, the link's
    cap, and more than one whole sync batch of 34.6 MiB, so an honest burst always fits). A
    sender without a send budget that answers faster only sees its surplus dropped and asked
    for again: catch-up slows, nothing is lost.
    The number of validators does not enter: each budget is per sender, and what one sender
    sends per height does not grow with the set (votes go to everyone, one each).

    **Consensus link, outbound, per validator**: at most `outbound_bytes` queued (48 MiB: one
    sync batch of 34.6 MiB plus a 6 MiB proposal and change); a frame that does not fit is
    dropped and counted, like a full queue (PBFT recovers lost messages by view change and
    decision transfer). The queue's frame count stays bounded as well.

    **Checkpoint protocol** (any peer: a joiner is not linked yet, and the checkpoint verifies on
    its own): at most `checkpoint_streams` served at once in total (peer ids are free, so only a
    global cap bounds memory and upload), `checkpoint_per_peer` requests per peer; the newest
    checkpoint is read once per `checkpoint_cache_s` off the event loop and shared by all.

    **Submit protocol** (miners and the owner, anyone): `submit_streams` open at once in total,
    `submit_streams_per_peer` per peer, and `submit_inflight_bytes` of frames being read or
    handled at once in total (a frame may be 17 MiB: without this, 64 streams could hold 1 GiB).

    **Streams opened by peers that are not admitted validators** (checked before the stream's
    protocol is negotiated, `p2p/swarm_fixes.py`): `stream_opens_per_peer` per peer id and
    `stream_opens` over all of them; over either the stream is reset. Honest non-validators open
    few: a miner one per submission, a joiner one checkpoint and genesis request, and its DHT
    lookups a few per decided block it fetches, well under 32/s from any one peer. Admitted
    validators are not counted here (their links have the budgets above, and their DHT and gossip
    streams are part of running the network).
    """

    link_frames: Rate = Rate(per_s=128, burst=512)
    link_bytes: Rate = Rate(per_s=32 * MiB, burst=64 * MiB)
    outbound_bytes: int = 48 * MiB
    checkpoint_streams: int = 4
    checkpoint_per_peer: Rate = Rate(per_s=0.2, burst=2)
    checkpoint_cache_s: float = 2.0
    submit_streams: int = 64
    submit_streams_per_peer: int = 4
    submit_inflight_bytes: int = 64 * MiB
    submit_inflight_bytes_per_peer: int = 36 * MiB
    stream_opens_per_peer: Rate = Rate(per_s=32, burst=128)
    stream_opens: Rate = Rate(per_s=256, burst=1024)
    max_peers: int = 4096  # per-peer tables evict their least recently used peer beyond this
