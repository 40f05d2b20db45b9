"""Peak memory of one run: CUDA's allocator peak on GPU, this process's peak RSS on CPU."""
from __future__ import annotations

import re
import threading

import psutil
import torch

from .safe_read import read_text


def _rss() -> int:
    return psutil.Process().memory_info().rss  # this process, also in a child forked after import


# psutil reports the current RSS but neither the kernel's peak (VmHWM) nor a way to reset it, and getrusage's
# ru_maxrss cannot be reset (it keeps the peak of every thread that exited): these two stay on /proc.
def _reset_high_water_mark() -> bool:
    """Linux resets a process's peak RSS (VmHWM) to its current RSS on `5` in clear_refs; False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _high_water_mark() -> int:
    return int(re.search(r"^VmHWM:\s+(\d+) kB", read_text("/proc/self/status"), re.M).group(1)) * 1024


class PeakMemory:
    """Context manager; `.peak` bytes and `.kind` afterwards. On CPU the kernel's own high-water mark, reset
    for each run: exact, and free (a sampling thread waking every 20 ms stalled the 2 compute threads of a
    2-core machine measurably). Where the mark cannot be reset, RSS is sampled every 20 ms instead."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop, self._thread = device, 0, threading.Event(), None
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss"

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_high_water_mark():
            self.peak = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is None:
            self.peak = _high_water_mark()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())
        return False
