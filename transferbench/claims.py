"""Claims: before an invocation trains a run (or builds a pretrain stage) it claims it with a small file, so two
invocations on one results folder (two shells, shards on a shared filesystem, Ray workers) never train or record
the same run twice.

A claim is created atomically (written to a private file, then hard-linked to its name: the link fails when the
name exists, on local disks and NFS alike) and holds the claimer's host, pid and process start time (psutil's
create_time). It is released (removed) when the run is recorded or abandoned. A claim whose process is gone (same
host, pid not running, or running but started at another time: a reused pid) is stale: the next claimer removes
it, under a lock (filelock) so that two of them never remove each other's fresh claim. A claim from another host cannot be checked
from here: it is honoured; `describe()` names the file to delete if that host crashed.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

import psutil
from filelock import FileLock

from .safe_read import read_text

HOST = socket.gethostname()
# psutil's create_time is the kernel's start ticks plus the boot time, and the boot time the kernel reports can
# move by a second (clock adjustments): starts this close are the same process. A process that reuses a dead
# claimer's pid starts later than that: a claimer imports and plans for seconds before it claims.
SAME_START_S = 1.0


def _started(pid: int) -> Optional[float]:
    """The process's start time (seconds since the epoch), to tell a reused pid from the claimer."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:  # gone, a zombie psutil cannot read, or not ours to inspect
        return None


def _legacy_started(ticks) -> Optional[float]:
    """Claims written before psutil (field `ticks`) hold the start in clock ticks since boot; None if unreadable."""
    try:
        return int(ticks) / os.sysconf("SC_CLK_TCK") + psutil.boot_time()
    except (TypeError, ValueError):
        return None


def _alive(pid: int, holder: dict) -> bool:
    if not psutil.pid_exists(pid):  # True for a live process of another user too
        return False
    now = _started(pid)
    if isinstance(holder.get("started"), (int, float)):
        then = holder["started"]
    elif holder.get("ticks") is not None:
        then = _legacy_started(holder["ticks"])
        if then is None:  # not a start time: it cannot be this process's
            return now is None
    else:
        return True  # no start recorded: the pid alone decides
    return now is None or abs(now - then) <= SAME_START_S


def owner() -> dict:
    """This process as a claim (or a temporary folder) records its owner."""
    return {"host": HOST, "pid": os.getpid(), "started": _started(os.getpid())}


def gone(holder: dict) -> bool:
    """The owner recorded in `holder` is a process of this host that no longer runs (a reused pid included)."""
    if holder.get("host") != HOST or not isinstance(holder.get("pid"), int):
        return False
    return not _alive(holder["pid"], holder)


class Claim:
    """One claim file. `try_acquire()` -> True when this process now holds it; `release()` removes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.token = uuid.uuid4().hex
        self.held = False

    def holder(self) -> Optional[dict]:
        """The claimer's {host, pid, started, since}, {} when the file is unreadable, None when unclaimed."""
        try:
            data = json.loads(read_text(self.path, 65536))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def stale(self, holder: Optional[dict]) -> bool:
        if holder is None:
            return False
        if not holder:  # unreadable: only if nobody touched it for a minute (a claim is written before its link)
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return False
        return gone(holder)

    def try_acquire(self) -> bool:
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = {**owner(), "token": self.token, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = self.path.parent / f".{self.path.name}.{self.token}"
        tmp.write_text(json.dumps(mine))
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return True
                except FileExistsError:
                    with self._lock():  # re-read under the lock: never remove a claim made meanwhile
                        if not self.stale(self.holder()):
                            return False
                        with contextlib.suppress(FileNotFoundError):
                            self.path.unlink()
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with self._lock():
            holder = self.holder()
            if holder and holder.get("token") == self.token:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()

    def describe(self) -> str:
        h = self.holder() or {}
        where = f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('since', '?')}"
        return where if h.get("host") == HOST else f"{where} (if that machine crashed, delete {self.path})"

    def remote(self) -> bool:
        """Held by another machine (whose process cannot be checked from here)."""
        h = self.holder()
        return bool(h) and h.get("host") != HOST

    def _lock(self) -> FileLock:
        """One lock per claims folder (the file stays, as waiters must share its inode)."""
        return FileLock(self.path.parent / ".claims.lock", mode=0o644)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
