"""Debug-only heap tracing for long runs: where does a node's memory go?

Off unless `VALIDATOR_NODE_MEMTRACE=<seconds>` is set in the environment; then `validator-node
run` starts tracemalloc and a daemon thread that every `<seconds>` appends to
`<data-dir>/memtrace.txt` the RSS, the object counts by type that grew most since the first
sample, and the allocation sites (file:line, or tracebacks of `VALIDATOR_NODE_MEMTRACE_FRAMES`
frames) that grew most since the first sample. A thread, not a trio task, so that tracing does not
change the node's event loop; when the variable is unset nothing is imported or started.

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
    import tracemalloc

    tracemalloc.start(frames)
    out = data_dir / "memtrace.txt"
    t = threading.Thread(target=_loop, args=(out, interval, frames), name="memtrace", daemon=True)
    t.start()
    return True


def _loop(out: Path, interval: float, frames: int) -> None:
    import tracemalloc

    started = time.monotonic()
    base_snap: tracemalloc.Snapshot | None = None
    base_types: Counter[str] | None = None
    key = "traceback" if frames > 1 else "lineno"
    while True:
        time.sleep(interval)
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>"))
        )
        types = type_counts()
        traced, peak = tracemalloc.get_traced_memory()
        lines = [
            f"=== t={time.monotonic() - started:.0f}s rss={rss_kib()} KiB traced={traced >> 10} KiB "
            f"peak={peak >> 10} KiB objects={sum(types.values())}"
        ]
        if base_snap is None or base_types is None:
            base_snap, base_types = snap, types
            lines.append("(baseline)")
        else:
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
