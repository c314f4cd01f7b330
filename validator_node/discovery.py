"""Validators find each other on the chain (issue 13): publish where this node listens, dial the rest.

A mixin of `ValidatorNode`. At start, and on every pass (`discovery_interval` seconds), the node
reads the subnet's commitments (`Chain.endpoints`, `chain.endpoints` for the format and why it is a
commitment): if its own is missing or names another address it publishes its current one (at
most once per `PUBLISH_BACKOFF`: a refused call still costs a fee on subtensor), and it keeps a
link to every validator of today's chain set and of the consensus set whose address it found
(`P2PTransport.dial`, which follows an address change). `--p2p.bootstrap` is then optional; the
Kademlia DHT's routing stays what it is. An address from the chain is only where to dial: the
handshake's hotkey attestation decides who answered, and a peer without a permit is refused there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from validator_node.chain.endpoints import EndpointError, check_multiaddr, format_endpoint, parse_endpoint
from wire.keys import ss58_of

log = logging.getLogger("validator_node.discovery")

#: seconds between two publications of this node's address (when the chain still shows another)
PUBLISH_BACKOFF = 300.0


def announced_address(configured: str | None, listening: list[str]) -> str | None:
    """The address to publish: the operator's `--p2p.announce`, else the first listen address
    another machine could dial (an unspecified 0.0.0.0 listen address is not one)."""
    if configured:
        check_multiaddr(configured)
        return configured
    for addr in listening:
        try:
            check_multiaddr(addr)
        except EndpointError:
            continue
        return addr
    return None


def dial_targets(found: dict[str, str], hotkeys: set[bytes], me: bytes) -> list[str]:
    """The published addresses of `hotkeys` (but ours), sorted: what this node dials."""
    out = []
    for hk in sorted(hotkeys - {me}):
        addr = parse_endpoint(found.get(ss58_of(hk), ""))
        if addr is not None:
            out.append(addr)
    return out


class Discovery:
    """Mixin: the node provides chain, hotkey, cfg (announce, discovery_interval), transport,
    metrics, app and chain_vset."""

    chain: Any
    hotkey: Any
    cfg: Any
    transport: Any
    metrics: Any
    app: Any
    chain_vset: Any
    _published_at: float | None = None
    _said_no_address = False

    async def _run_discovery(self) -> None:
        while True:
            await self._discover_once()
            await trio.sleep(self.cfg.discovery_interval)

    async def _discover_once(self) -> None:
        try:
            found = await trio.to_thread.run_sync(self.chain.endpoints)
        except Exception as exc:  # the chain is unreachable now: try again next pass
            self.metrics.inc("discovery_reads_total", result="error")
            log.warning("cannot read validators' addresses from the chain: %s", exc)
            return
        self.metrics.inc("discovery_reads_total", result="ok")
        await self._publish_if_changed(found)
        hotkeys = {v.hotkey for v in self.app.vset.validators}
        if self.chain_vset is not None:
            hotkeys |= {v.hotkey for v in self.chain_vset.validators}
        for addr in dial_targets(found, hotkeys, self.hotkey.public_key):
            if self.transport.dial(addr):
                self.metrics.inc("discovery_dials_total")
                log.info("dialling %s, found on the chain", addr)

    async def _publish_if_changed(self, found: dict[str, str]) -> None:
        try:
            mine = announced_address(self.cfg.announce, self.transport.addrs())
        except EndpointError as exc:
            mine = None
            if not self._said_no_address:
                log.error("not publishing this node's address: --p2p.announce %s", exc)
        if mine is None:
            if not self._said_no_address and not self.cfg.announce:
                log.warning(
                    "not publishing this node's address: it listens on no address others can dial "
                    "(%s); pass --p2p.announce /ip4/<public ip>/tcp/<port>/p2p/%s",
                    ", ".join(self.transport.addrs()),
                    self.transport.peer_id,
                )
            self._said_no_address = True
            return
        text = format_endpoint(mine)
        if found.get(self.hotkey.ss58) == text:
            return
        now = time.monotonic()
        if self._published_at is not None and now - self._published_at < PUBLISH_BACKOFF:
            return
        self._published_at = now
        try:
            block = await trio.to_thread.run_sync(self.chain.publish_endpoint, self.hotkey, text)
        except Exception as exc:
            self.metrics.inc("discovery_published_total", result="refused")
            log.warning("the chain refused this node's address %s: %s", mine, exc)
            return
        self.metrics.inc("discovery_published_total", result="ok")
        log.info("published this node's address %s on the chain at block %d", mine, block)
