"""`validator-node run` tunes glibc's malloc before any thread starts (cli.run.tune_malloc).

Arenas: each thread that allocates gets an arena of its own, and glibc keeps freed memory in
each: the soak found a node's worker threads holding 21-26 MB of free heap that way. Counted here
with glibc's own `malloc_info` in a fresh interpreter whose 8 threads allocate and free.

The mmap threshold: after a 16 MiB buffer is freed glibc serves every smaller large buffer from
the heap, where a surviving medium object pins the pages around it; the adversary run's junk
frames left validator 0 ~280 MB larger that way. Measured here as the RSS a fresh interpreter
keeps after frame-like buffers (grown by appending, then copied) are freed among survivors.
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
    from validator_node.cli.run import tune_malloc
    tune_malloc()
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


FRAGMENTS = """
import os, sys
if sys.argv[1] == "capped":
    from validator_node.cli.run import tune_malloc
    tune_malloc()
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
start = rss_mb()
survivors = []
for _ in range(6):
    big = bytes(16 * 1024 * 1024)  # one junk frame: raises glibc's dynamic threshold
    del big
    frames, keep = [], []
    for _ in range(40):
        buf = bytearray()
        for _ in range(32):
            buf += os.urandom(65536)  # a 2 MiB frame read in chunks
        frames.append(bytes(buf))
        del buf
        keep.append(bytearray(200_000))  # a medium object allocated meanwhile, some survive
    del frames
    survivors += keep[::8]
print(rss_mb() - start)
"""


def probe(code: str, mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", code, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def arenas(mode: str) -> int:
    return probe(PROBE, mode)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_node_process_uses_at_most_two_malloc_arenas() -> None:
    assert arenas("default") > 2  # the probe does make glibc spread over arenas
    assert arenas("capped") <= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_frame_buffers_leave_the_process() -> None:
    survivors_mb = 30 * 200_000 / 1e6  # what the probe keeps on purpose: 6 MB
    assert probe(FRAGMENTS, "default") > 40  # measured 57 MB kept: the probe does fragment
    assert probe(FRAGMENTS, "capped") < survivors_mb + 10  # measured 6 MB
