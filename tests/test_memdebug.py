"""The heap tracer (validator_node.memdebug) must never break the node it observes.

A soak with VALIDATOR_NODE_MEMTRACE set killed its traced validator at minute 20: the tracer's
thread walked the heap with gc.get_objects(), which can take a reference to a tuple the event loop
is still building from a generator; CPython then fails that tuple's in-place resize with
"SystemError: bad argument to internal function" (here in pipeline/snapshot.py's state_root) and
the node exited. The test runs the tracer in a real process that builds tuples the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys, time
from pathlib import Path
from validator_node import memdebug

out = Path(sys.argv[1])
assert memdebug.maybe_start(out)
sys.setswitchinterval(1e-5)  # switch threads often, as a busy node does

def gen(k):
    yield from range(k)

errors = 0
end = time.monotonic() + 3.0
while time.monotonic() < end:
    try:
        tuple(gen(50))
    except SystemError:
        errors += 1
print(errors)
"""


def test_tracer_does_not_break_tuple_building_in_the_traced_process(tmp_path: Path) -> None:
    env = dict(os.environ, VALIDATOR_NODE_MEMTRACE="0.05", VALIDATOR_NODE_MEMTRACE_PY="1")
    env.pop("VALIDATOR_NODE_MEMTRACE_WALK", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) == 0, "the tracer's thread broke tuple construction"
    trace = (tmp_path / "memtrace.txt").read_text()
    assert trace.count("=== t=") >= 3  # it did trace meanwhile
    assert "--- native" in trace and "malloc_used=" in trace
