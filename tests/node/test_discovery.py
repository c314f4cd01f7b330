"""Which address a node publishes on the chain and which it dials (validator_node.discovery)."""

from __future__ import annotations

import pytest

from validator_node.chain.endpoints import EndpointError, format_endpoint, parse_endpoint
from validator_node.discovery import announced_address, dial_targets
from wire.keys import Hotkey

PEER = "12D3KooWFQ2RiihDt62QLEngHRr4cQkz6AvrpvzRztHC8KqbXcYR"
A, B, C = (Hotkey.from_name(f"disc-{i}") for i in range(3))


def test_an_unspecified_listen_address_is_never_published() -> None:
    assert announced_address(None, [f"/ip4/0.0.0.0/tcp/4001/p2p/{PEER}"]) is None
    assert announced_address(None, [f"/ip4/0.0.0.0/tcp/1/p2p/{PEER}", f"/ip4/10.1.2.3/tcp/1/p2p/{PEER}"]) == (
        f"/ip4/10.1.2.3/tcp/1/p2p/{PEER}"
    )
    announce = f"/dns4/validator.example.org/tcp/30333/p2p/{PEER}"
    assert announced_address(announce, [f"/ip4/0.0.0.0/tcp/1/p2p/{PEER}"]) == announce
    with pytest.raises(EndpointError, match="peer id"):
        announced_address("/ip4/203.0.113.1/tcp/1", [])


def test_only_members_published_addresses_are_dialled_and_never_our_own() -> None:
    addr = {k: f"/ip4/10.0.0.{i}/tcp/4001/p2p/{PEER}" for i, k in enumerate((A, B, C))}
    found = {
        A.ss58: format_endpoint(addr[A]),
        B.ss58: format_endpoint(addr[B]),
        C.ss58: "someone else's use of commitments",
        "5Nobody": format_endpoint(addr[C]),
    }
    members = {A.public_key, B.public_key, C.public_key}
    assert dial_targets(found, members, me=A.public_key) == [addr[B]]
    assert parse_endpoint("btp1 " + "x" * 200) is None and parse_endpoint(format_endpoint(addr[A])) == addr[A]
    with pytest.raises(EndpointError, match="fit"):
        format_endpoint(f"/dns4/{'a' * 40}.{'b' * 40}.org/tcp/1/p2p/{PEER}")
