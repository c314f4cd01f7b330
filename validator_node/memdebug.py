"""Debug-only heap tracing for long runs: where does a node's memory go?

Off unless `VALIDATOR_NODE_MEMTRACE=<seconds>` is set in the environment; then `validator-node
run` starts tracemalloc and a daemon thread that every `<seconds>` appends to
`<data-dir>/memtrace.txt` the RSS, the object counts by type that grew most since the first
sample, and the allocation sites (file:line, or tracebacks of `VALIDATOR_NODE_MEMTRACE_FRAMES`
frames) that grew most since the first sample. A thread, not a trio task, so that tracing does not
change the node's event loop; when the variable is unset nothing is imported or started.

Each sample also records memory Python cannot see: glibc's `mallinfo2` (bytes in use, free
bytes held in the heap and arenas: fragmentation), SQLite's own allocator (`sqlite3_memory_used`,
its page caches included), and the thread count (each thread may get its own malloc arena).
`VALIDATOR_NODE_MEMTRACE_PY=0` skips tracemalloc (native figures only, at no allocation cost);
`VALIDATOR_NODE_MEMTRACE_DUMP=1` also writes each snapshot to `memtrace-<seconds>.snap`, so any
two moments can be compared offline (`tracemalloc.Snapshot.load`). Creating the file
`<data-dir>/memtrace.trim` makes the next sample call `malloc_trim(0)` and log RSS before and
after: how much of RSS is free memory the allocator had kept.

tracemalloc slows allocation by roughly 2x and costs memory of its own (counted in RSS but not in
its own statistics), so RSS figures from a traced run are not the ones to quote: the soak
(`bench/soak_memory.py`) measures RSS without tracing.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import Counter
from pathlib import Path

ENV = "VALIDATOR_NODE_MEMTRACE"
ENV_FRAMES = "VALIDATOR_NODE_MEMTRACE_FRAMES"
ENV_WHY = "VALIDATOR_NODE_MEMTRACE_WHY"  # type names: print what keeps their newest instance alive
ENV_PY = "VALIDATOR_NODE_MEMTRACE_PY"  # "0": native figures only, no tracemalloc
ENV_DUMP = "VALIDATOR_NODE_MEMTRACE_DUMP"  # "1": dump each snapshot for offline comparison
ENV_WALK = "VALIDATOR_NODE_MEMTRACE_WALK"  # "1": also count objects by type (can crash the node)


def native_stats() -> dict[str, int]:
    """glibc heap (mallinfo2) and SQLite allocator figures in KiB, and the thread count; the
    figures that this process's platform lacks are left out."""
    import ctypes
    import ctypes.util

    out: dict[str, int] = {"threads": threading.active_count()}
    try:
        libc = ctypes.CDLL(None)

        class MallInfo2(ctypes.Structure):
            _fields_ = [
                (n, ctypes.c_size_t)
                for n in (
                    "arena",
                    "ordblks",
                    "smblks",
                    "hblks",
                    "hblkhd",
                    "usmblks",
                    "fsmblks",
                    "uordblks",
                    "fordblks",
                    "keepcost",
                )
            ]

        libc.mallinfo2.restype = MallInfo2
        mi = libc.mallinfo2()
        out.update(
            malloc_heap=mi.arena >> 10,
            malloc_mmap=mi.hblkhd >> 10,
            malloc_used=mi.uordblks >> 10,
            malloc_free=mi.fordblks >> 10,
        )
    except (OSError, AttributeError):
        pass
    try:
        name = ctypes.util.find_library("sqlite3")
        if name:
            lib = ctypes.CDLL(name)
            lib.sqlite3_memory_used.restype = ctypes.c_int64
            lib.sqlite3_memory_highwater.restype = ctypes.c_int64
            out.update(
                sqlite=lib.sqlite3_memory_used() >> 10, sqlite_hw=lib.sqlite3_memory_highwater(0) >> 10
            )
    except (OSError, AttributeError):
        pass
    return out


def malloc_trim() -> bool:
    """Ask glibc to give free heap memory back to the system (debug: measures fragmentation)."""
    import ctypes

    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False


def rss_kib(pid: int | str = "self") -> int | None:
    """Resident set size in KiB from /proc (Linux), or None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def type_counts() -> Counter[str]:
    """Live gc-tracked objects by type name (a full pass over the heap: seconds on a big one)."""
    return Counter(type(o).__name__ for o in gc.get_objects())


def task_names() -> Counter[str]:
    """Live trio tasks by name: a task leak shows as one name whose count keeps rising."""
    return Counter(str(getattr(o, "name", "?")) for o in gc.get_objects() if type(o).__name__ == "Task")


def maybe_start(data_dir: Path) -> bool:
    """Start tracing if the environment asks for it; return whether it did."""
    raw = os.environ.get(ENV)
    if not raw:
        return False
    interval = float(raw)
    frames = int(os.environ.get(ENV_FRAMES, "1"))
    trace = os.environ.get(ENV_PY, "1") != "0"
    if trace:
        import tracemalloc

        tracemalloc.start(frames)
    out = data_dir / "memtrace.txt"
    target = _loop if trace else _native_loop
    t = threading.Thread(target=target, args=(out, interval, frames), name="memtrace", daemon=True)
    t.start()
    return True


def _native_line(out: Path, started: float) -> str:
    """One line of native figures; performs a requested malloc_trim first."""
    now = time.monotonic() - started
    trim = out.parent / "memtrace.trim"
    pre = ""
    if trim.exists():
        before = rss_kib()
        ok = malloc_trim()
        trim.unlink(missing_ok=True)
        pre = f"malloc_trim -> {ok}: rss {before} -> {rss_kib()} KiB\n"
    stats = " ".join(f"{k}={v}" for k, v in native_stats().items())
    return f"{pre}--- native t={now:.0f}s rss={rss_kib()} KiB {stats}"


def _native_loop(out: Path, interval: float, frames: int) -> None:
    started = time.monotonic()
    while True:
        time.sleep(interval)
        with open(out, "a") as f:
            f.write(_native_line(out, started) + "\n")


def _loop(out: Path, interval: float, frames: int) -> None:
    import tracemalloc

    started = time.monotonic()
    dump = os.environ.get(ENV_DUMP) == "1"
    walk = os.environ.get(ENV_WALK) == "1"
    base_snap: tracemalloc.Snapshot | None = None
    base_types: Counter[str] | None = None
    key = "traceback" if frames > 1 else "lineno"
    while True:
        time.sleep(interval)
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>"))
        )
        if dump:
            snap.dump(str(out.parent / f"memtrace-{time.monotonic() - started:05.0f}.snap"))
        # gc.get_objects() from this thread can take a reference to a tuple the event loop is
        # still building (tuple(genexpr) resizes it in place and needs refcount 1): CPython
        # then raises SystemError "bad argument to internal function" in the node, which
        # killed a traced validator at minute 20 of a soak. Heap walks are therefore opt-in.
        types = type_counts() if walk else Counter()
        traced, peak = tracemalloc.get_traced_memory()
        lines = [
            _native_line(out, started),
            f"=== t={time.monotonic() - started:.0f}s rss={rss_kib()} KiB traced={traced >> 10} KiB "
            f"peak={peak >> 10} KiB objects={sum(types.values())}",
        ]
        if base_snap is None or base_types is None:
            base_snap, base_types = snap, types
            lines.append("(baseline)")
        else:
            if walk:
                grown = (types - base_types).most_common(25)
                lines.append("object types grown since baseline: " + ", ".join(f"{t} +{n}" for t, n in grown))
                tasks = task_names()
                lines.append(
                    f"trio tasks alive: {sum(tasks.values())}: "
                    + ", ".join(f"{t} {n}" for t, n in tasks.most_common(12))
                )
                for name in filter(None, os.environ.get(ENV_WHY, "").split(",")):
                    lines.extend(why_alive(name))
            for stat in snap.compare_to(base_snap, key)[:25]:
                lines.append(f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} objs  ")
                lines.extend("    " + ln for ln in stat.traceback.format()[-2 * frames :])
        with open(out, "a") as f:
            f.write("\n".join(lines) + "\n")


def why_alive(type_name: str, depth: int = 7) -> list[str]:
    """Referrer chains (up to `depth` hops) of one live instance of `type_name`: the owner path
    that keeps such objects alive. Debug only: walks the whole heap several times."""
    objs = [o for o in gc.get_objects() if type(o).__name__ == type_name]
    if not objs:
        return [f"why {type_name}: none alive"]
    target = objs[len(objs) // 2]
    out = [f"why {type_name} ({len(objs)} alive): referrer chains of one"]
    ignore = {id(objs)}
    frontier: list[tuple[object, str]] = [(target, f"{type_name}")]
    ignore |= {id(frontier), id(frontier[0])}
    seen = {id(target)}
    for _ in range(depth):
        nxt: list[tuple[object, str]] = []
        ignore.add(id(nxt))
        for obj, path in frontier:
            refs = [r for r in gc.get_referrers(obj) if id(r) not in ignore and not _is_frame(r)]
            ignore.add(id(refs))
            for r in refs[:4]:
                if id(r) in seen:
                    continue
                seen.add(id(r))
                entry = (r, f"{path} <- {_describe(r, obj)}")
                ignore.add(id(entry))
                nxt.append(entry)
        if not nxt:
            break
        frontier = nxt[:12]
    out.extend("    " + p for _, p in frontier)
    return out


def _is_frame(r: object) -> bool:
    import types

    return isinstance(r, types.FrameType)


def _describe(container: object, item: object) -> str:
    if isinstance(container, dict):
        for k, v in container.items():
            if v is item:
                return f"dict[{str(k)[:40]!r}]"
            if k is item:
                return "dict(key)"
        return "dict"
    code = getattr(container, "cr_code", None)
    if code is not None:
        frame = getattr(container, "cr_frame", None)
        return f"coroutine {code.co_qualname}:{frame.f_lineno if frame is not None else '-'}"
    if isinstance(container, list | tuple | set):
        return f"{type(container).__name__}(len {len(container)})"
    return type(container).__name__
