"""`validator-node run` caps glibc's malloc arenas before any thread starts (cli_run.py).

Each thread that allocates gets an arena of its own, and glibc keeps freed memory in each: the
soak found a node's worker threads holding 21-26 MB of free heap that way. Counted here with
glibc's own `malloc_info` in a fresh interpreter whose 8 threads allocate and free.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import ctypes, sys, tempfile, threading
if sys.argv[1] == "capped":
    from validator_node.cli_run import limit_malloc_arenas
    limit_malloc_arenas()
def work():
    for _ in range(20):
        x = [bytes(1000) for _ in range(20000)]
        del x
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
f = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, f)
libc.fclose(f)
print(open(path).read().count("<heap nr="))
"""


def arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_node_process_uses_at_most_two_malloc_arenas() -> None:
    assert arenas("default") > 2  # the probe does make glibc spread over arenas
    assert arenas("capped") <= 2
