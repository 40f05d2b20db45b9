"""How the perf scripts here time a command and summarise paired rounds: a whole process from spawn to exit, with
the CPU seconds of it and its children (what other processes sharing the machine inflate least), and the 95%
t-interval of the mean of per-round ratios."""
from __future__ import annotations

import resource
import statistics
import subprocess
import time


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], **run) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall seconds, CPU seconds, the finished process) of `subprocess.run(cmd, **run)`."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, **run)
    return time.perf_counter() - t0, _children_cpu() - cpu0, done


def t_interval(xs: list[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of `xs` (scipy); the one value twice when there is one."""
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return mean, mean
    from scipy import stats

    low, high = stats.t.interval(level, len(xs) - 1, loc=mean, scale=stats.sem(xs))
    return float(low), float(high)
