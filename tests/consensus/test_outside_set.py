"""A replica outside its height's validator set (a validator in the epoch before it joins, or after
it leaves) follows the decisions but signs nothing: found by the simulator with set changes, where
such a replica put its own signature in the commit certificate it decided with, and that
certificate then failed verification everywhere else ("1 signer(s) are not in the validator set")."""

from __future__ import annotations

import hashlib

from consensus.actions import Broadcast, PersistVote
from consensus.certificates import verify_certificate
from consensus.sim.app import ChainApp
from tests.consensus.harness import NETUID, Cluster
from wire.keys import Hotkey


def test_a_replica_outside_the_set_decides_with_valid_certificates_and_signs_nothing() -> None:
    c = Cluster([100, 200, 300, 400])
    outsider = Hotkey.from_name("unit-joiner")
    c.nodes[outsider.public_key] = c._new_node(outsider, ChainApp(), [])
    c.start()
    c.deliver()
    follower = c.nodes[outsider.public_key]
    assert follower.app.tip()[0] == 4  # it follows the members
    for d in follower.decided:
        verify_certificate(
            d.certificate, c.vset, NETUID, height=d.height, block_hash=hashlib.sha256(d.block).digest()
        )
    assert outsider.public_key not in {s.signer for d in follower.decided for s in d.certificate.signatures}
    assert not follower.records  # nothing signed, so nothing to persist
    # and it stays silent when it times out: no view change from a non-member
    c.advance(10.0)
    actions = follower.replica.on_timer(c.now + 100.0)
    assert not [a for a in actions if isinstance(a, Broadcast | PersistVote)]
