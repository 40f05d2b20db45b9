"""Where a number came from: package versions, git commit, host and device."""
from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .safe_read import read_text

PACKAGES = ("transferbench", "torch", "transformers", "datasets", "accelerate", "evaluate", "peft", "timm",
            "ultralytics")


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the transferbench checkout that ran (with '-dirty' when it has local changes)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        sha = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def cpu_name() -> str:
    """The CPU's model name. psutil has no API for it (counts and frequencies only), and py-cpuinfo spends
    ~1.2 s per process probing CPUID in a subprocess, so Linux's /proc/cpuinfo is read; elsewhere platform's."""
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def device_name(device) -> str:
    """The accelerator's marketing name (what the price table is keyed by), or 'CPU: <model>'."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_name()}"


def env() -> dict:
    """Versions, commit, host, and torch's CPU thread count: on CPU a convolution's sums follow the thread count,
    so a run repeats to the last digit only with as many threads (Ray runs get their --cpus-per-run)."""
    import sys

    torch = sys.modules.get("torch")  # a record is made where torch already runs; never imported for it
    return {"versions": versions(), "git_commit": git_commit(), "host": platform.node(),
            "platform": platform.platform(), "torch_threads": torch.get_num_threads() if torch else None}
