"""Cost model: device_hours = wall_seconds x device_count / 3600; cost_usd = device_hours x price."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

PRICES = Path(__file__).with_name("prices.yaml")


@dataclass(frozen=True)
class Price:
    per_device_hour: Optional[float]  # None: no price known for this device
    date: Optional[str]
    source: str  # a URL, or "user override"


@functools.lru_cache(maxsize=None)
def price_table(path: str | Path = PRICES) -> dict:
    return yaml.safe_load(Path(path).read_text())


def lookup(device_name: str, override: Optional[float] = None) -> Price:
    """The price of one device-hour. A table key matches as a whole word of the device name, case-insensitively
    ('NVIDIA H100 80GB HBM3' -> H100, but 'NVIDIA L40S' is not L4); CPU runs ('CPU: ...') use the CPU entry."""
    if override is not None:
        return Price(override, None, "user override")
    table = price_table()
    name = device_name.upper()
    hits = [k for k in table["devices"] if re.search(rf"(?<![A-Z0-9]){re.escape(k.upper())}(?![A-Z0-9])", name)]
    if not hits:
        return Price(None, table.get("date"), "no entry for this device in prices.yaml")
    entry = table["devices"][max(hits, key=len)]
    return Price(float(entry["price"]), table.get("date"), entry.get("source", ""))


def device_hours(wall_seconds: float, device_count: int) -> float:
    return wall_seconds * device_count / 3600.0


def cost_usd(hours: float, price: Price) -> Optional[float]:
    return None if price.per_device_hour is None else hours * price.per_device_hour
