"""Claims: before an invocation trains a run (or builds a pretrain stage) it claims it with a small file, so two
invocations on one results folder (two shells, shards on a shared filesystem, Ray workers) never train or record
the same run twice.

A claim is created atomically (written to a private file, then hard-linked to its name: the link fails when the
name exists, on local disks and NFS alike) and holds the claimer's host, pid and process start time. It is
released (removed) when the run is recorded or abandoned. A claim whose process is gone (same host, pid not
running, or running but started at another time: a reused pid) is stale: the next claimer removes it, under a
lock so that two of them never remove each other's fresh claim. A claim from another host cannot be checked
from here: it is honoured; `describe()` names the file to delete if that host crashed.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

HOST = socket.gethostname()


def _start_ticks(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid from the claimer."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, ticks: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    now = _start_ticks(pid)
    return ticks is None or now is None or now == ticks


class Claim:
    """One claim file. `try_acquire()` -> True when this process now holds it; `release()` removes it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.token = uuid.uuid4().hex
        self.held = False

    def holder(self) -> Optional[dict]:
        """The claimer's {host, pid, ticks, since}, {} when the file is unreadable, None when unclaimed."""
        try:
            data = json.loads(self.path.read_text())
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
        if holder.get("host") != HOST or not isinstance(holder.get("pid"), int):
            return False
        return not _alive(holder["pid"], holder.get("ticks"))

    def try_acquire(self) -> bool:
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = {"host": HOST, "pid": os.getpid(), "ticks": _start_ticks(os.getpid()), "token": self.token,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
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

    @contextlib.contextmanager
    def _lock(self):
        fd = os.open(self.path.parent / ".claims.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
