"""The DHT test network fails a test that loses a connection, and says why (dht/localnet.py):
losses used to be redialed and waited out, which hid the yamux bugs in dht/yamux_fixes.py."""

from __future__ import annotations

import re

import trio

from dht.localnet import dht_network
from tests.dht.certs import NETUID, vset_for


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for e in group.exceptions for leaf in _leaves(e)]
    return [group]


async def test_a_lost_connection_fails_the_network_and_names_its_cause() -> None:
    raised: list[BaseException] = []
    try:
        async with dht_network(3, NETUID, vset_for) as net:
            conn = net.hosts[0].get_network().connections[net.hosts[1].get_id()][0]
            await conn.muxed_conn.secured_conn.close()  # the TCP connection goes, nothing else
            with trio.fail_after(10):
                while len(net.lost) < 2:
                    await trio.sleep(0.05)
    except* AssertionError as group:  # the hosts' nurseries wrap it
        raised = _leaves(group)
    assert len(raised) == 1, "the network did not fail"
    lost = str(raised[0])
    assert lost.startswith("connections lost during the test")
    for me, peer in ((0, 1), (1, 0)):  # each side, with the error its reader saw
        assert re.search(rf"host {me} lost its connection to host {peer}: \w+(Error|Exception): ", lost), lost
    assert "host 2" not in lost
