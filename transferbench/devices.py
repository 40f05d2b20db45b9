"""Tables keyed by device name (package data: prices.yaml for the cost model, peaks.yaml for MFU) and the one
rule that matches a device name to their keys."""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Iterable, Optional

import yaml


@functools.lru_cache(maxsize=None)
def load_table(path: str | Path) -> dict:
    """A YAML table, read once per process."""
    return yaml.safe_load(Path(path).read_text())


def match(device_name: str, keys: Iterable[str]) -> Optional[str]:
    """The key that names `device_name`, or None. A key matches as a whole word of the device name,
    case-insensitively ('NVIDIA H100 80GB HBM3' -> H100, but 'NVIDIA L40S' is not L4, nor 'NVIDIA GH200' H200);
    the longest matching key wins ('NVIDIA H100 PCIe' -> 'H100 PCIe', not H100)."""
    name = device_name.upper()
    hits = [k for k in keys if re.search(rf"(?<![A-Z0-9]){re.escape(k.upper())}(?![A-Z0-9])", name)]
    return max(hits, key=len) if hits else None
