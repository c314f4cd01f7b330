"""Where a validator's node listens, as a commitment on the subnet (issue 13: peers from the chain).

Each node publishes one full libp2p multiaddr with its peer id, e.g.
`btp1 /ip4/203.0.113.7/tcp/30333/p2p/12D3KooW...`, as its hotkey's commitment on the subnet
(subtensor's Commitments pallet, `set_commitment` with one `Raw` field; the embedded local chain
models the same call). Why a commitment and not `ServeAxon`: an axon holds an IP and a port but no
peer id, and a libp2p dial needs the peer id (Noise checks it); a commitment holds the whole
address in one call of at most 128 bytes, and the pallet's space quota (each call costs at least
100 bytes against a per-tempo allowance) is far above a node publishing at start and when its
address changes. The prefix keeps other uses of commitments on the same subnet apart, and names
the format's version.

An address read from the chain is only where to dial: the p2p handshake's hotkey attestation
decides who the peer is, as for any bootstrap address.
"""

from __future__ import annotations

PREFIX = "btp1 "
MAX_COMMITMENT = 128  # bytes: the largest `Raw` field of a commitment


class EndpointError(ValueError):
    pass


def format_endpoint(addr: str) -> str:
    """The commitment text for a multiaddr (refused if it is not dialable or does not fit)."""
    check_multiaddr(addr)
    text = PREFIX + addr
    if len(text.encode()) > MAX_COMMITMENT:
        raise EndpointError(f"{addr} does not fit a {MAX_COMMITMENT}-byte commitment")
    return text


def parse_endpoint(text: str) -> str | None:
    """The multiaddr a commitment names, or None if it is not ours or not a dialable address."""
    if not text.startswith(PREFIX) or len(text.encode()) > MAX_COMMITMENT:
        return None
    addr = text[len(PREFIX) :]
    try:
        check_multiaddr(addr)
    except EndpointError:
        return None
    return addr


def check_multiaddr(addr: str) -> None:
    """A dialable libp2p address: /ip4|ip6|dns*/.../tcp/<port>/p2p/<peer id>, with a routable host."""
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    parts = addr.split("/")
    if len(parts) != 7 or parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[3] != "tcp":
        raise EndpointError(f"{addr!r} is not /ip4|ip6|dns/<host>/tcp/<port>/p2p/<peer id>")
    if parts[2] in ("0.0.0.0", "::"):
        raise EndpointError(f"{addr!r} names no host (an unspecified listen address): pass --p2p.announce")
    try:
        info_from_p2p_addr(multiaddr.Multiaddr(addr))
    except Exception as exc:
        raise EndpointError(f"{addr!r}: {exc}") from None
