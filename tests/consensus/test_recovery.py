"""Crash recovery at the points where record order matters (issue 12, item 9)."""

from __future__ import annotations

from consensus.messages import PHASE_COMMIT, PHASE_PREPARE, RECORD_VIEW_CHANGE
from tests.consensus.harness import Cluster


def test_a_replica_that_prepared_in_a_new_view_and_crashed_still_commits_in_that_view() -> None:
    """The replica entered view 1 through a view change, prepared the new leader's block and
    crashed before committing. Its record holds VIEW_CHANGE(1) then PREPARE(1): it must restart in
    view 1 *out* of the view change, so that it commits in view 1 and the height is decided there
    (with four equal stakes and the view-0 leader silent, its commit is needed for a quorum)."""
    c = Cluster([1, 1, 1, 1])
    silent = c.vset.leader(1, 0)
    c.down.add(silent)
    for hk, node in c.nodes.items():
        if hk != silent:
            c.apply(hk, node.replica.start(c.now))
    c.deliver()
    c.advance(5.0)  # the silent leader's view times out: everyone moves to view 1
    new_leader = c.vset.leader(1, 1)
    assert new_leader != silent
    victim = next(hk for hk in c.nodes if hk not in (silent, new_leader))
    for _ in range(10_000):
        assert c.queue, "ran out of messages before the victim prepared in view 1"
        c.deliver(limit=1)
        recs = c.nodes[victim].records
        if any(r.kind == PHASE_PREPARE and r.view == 1 for r in recs):
            break
    recs = c.nodes[victim].records
    assert any(r.kind == RECORD_VIEW_CHANGE and r.view == 1 for r in recs)
    assert not any(r.kind == PHASE_COMMIT for r in recs) and not c.nodes[victim].decided
    c.restart(victim)  # crash right after the prepare was persisted (and sent)
    node = c.nodes[victim]
    assert (node.replica.view, node.replica.in_view_change) == (1, False)
    c.deliver()  # no time passes: view 1 must complete without another view change
    assert any(r.kind == PHASE_COMMIT and r.view == 1 for r in node.records)
    for hk, n in c.nodes.items():
        if hk != silent:
            assert n.decided and n.decided[0].certificate.view == 1, hk.hex()[:8]
