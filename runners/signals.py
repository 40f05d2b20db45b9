"""Ctrl-C and SIGTERM: the run in progress stops after its current step and is not recorded, so no store
write is ever cut short (SLURM's time limit sends SIGTERM)."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run in progress stops after its current step and is not recorded."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.store, self.main_process = None, True  # set by the API: where the finished runs are recorded


_requested: list[int] = []  # the stop signal received inside graceful_stop(), if any


@contextlib.contextmanager
def graceful_stop():
    """Inside: the first SIGINT/SIGTERM asks the loop to stop after the current step; a second one interrupts
    at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _requested:
            raise Interrupted(signum)
        _requested.append(signum)
        print("transferbench: stopping after the current step (again to stop at once)", file=sys.stderr, flush=True)

    _requested.clear()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _requested.clear()


def stop_requested() -> bool:
    """Whether a stop was asked for (for loops that stop themselves: Ultralytics' trainer flag)."""
    return bool(_requested)


def check_stop() -> None:
    """Raise Interrupted if a stop was requested (called between steps and between runs)."""
    if _requested:
        raise Interrupted(_requested[0])
