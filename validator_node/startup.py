"""What `validator-node run` holds and checks before a node starts (issue 13: one signer per hotkey).

* The data directory's lock. One process per node folder (`<data-dir>/<netuid>/<hotkey ss58>/`):
  an exclusive `flock` on `node.lock` inside it, taken before any store, chain or socket is
  opened and held for the life of the process. The kernel drops it when the process ends,
  however it ends (exit, crash, `kill -9`), so there is never a stale lock to clean up; the
  holder writes its pid into the file so that a second instance can name it. A second node on
  the same folder would share the vote record with the first and could sign a vote the first
  already signed differently; one on another machine cannot be seen from here (the p2p layer
  detects it: `duplicate_hotkey_total`, p2p/host.py).
* `StartupError`: why a node cannot start, in one line for the operator (the folder is locked, a
  port is taken). Raised where it is found, printed by the CLI without a traceback.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

LOCK_NAME = "node.lock"

#: the locks this process holds: referenced here so that they live as long as the process
_held: list[IO[str]] = []


class StartupError(Exception):
    """A reason the node cannot start, one line, for the operator."""


class DataDirLocked(StartupError):
    def __init__(self, node_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "a process that has not written its pid yet"
        super().__init__(
            f"{node_dir} is in use by another validator-node ({holder}): one node per hotkey and data"
            " directory; stop that one first"
        )
        self.pid = pid


def lock_data_dir(node_dir: Path) -> IO[str]:
    """Take the node folder's lock (creating the folder) and write our pid into it; the lock is
    held until the process ends (or the returned file is closed). Raises DataDirLocked naming
    the holder's pid, or StartupError when the folder or the lock file cannot be made."""
    path = node_dir / LOCK_NAME
    try:
        node_dir.mkdir(parents=True, exist_ok=True)
        # never truncated before the lock is ours: the file holds the holder's pid
        f = open(path, "a+", encoding="ascii")  # noqa: SIM115 - held open for the process's life
    except OSError as exc:
        raise StartupError(f"cannot use the data directory {node_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise DataDirLocked(node_dir, int(holder) if holder.isdigit() else None) from None
    except OSError as exc:
        f.close()
        raise StartupError(f"cannot lock {path}: {exc.strerror or exc}") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held.append(f)
    return f


def bind_failure(host: str, port: int) -> str:
    """Why a TCP listener on host:port cannot start, found by binding it once ("" if it can be
    bound now). py-libp2p's swarm logs a failed listen and carries on listening nowhere."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as listeners do
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return ""
