"""Cost model: device_hours = wall_seconds x device_count / 3600; cost_usd = device_hours x price."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import devices

PRICES = Path(__file__).with_name("prices.yaml")


@dataclass(frozen=True)
class Price:
    per_device_hour: Optional[float]  # None: no price known for this device
    date: Optional[str]
    source: str  # a URL, or "user override"


def price_table(path: str | Path = PRICES) -> dict:
    return devices.load_table(path)


def lookup(device_name: str, override: Optional[float] = None) -> Price:
    """The price of one device-hour. A table key matches as a whole word of the device name, case-insensitively
    ('NVIDIA H100 80GB HBM3' -> H100, but 'NVIDIA L40S' is not L4; devices.match); CPU runs ('CPU: ...') use the
    CPU entry."""
    if override is not None:
        return Price(override, None, "user override")
    table = price_table()
    key = devices.match(device_name, table["devices"])
    if key is None:
        return Price(None, table.get("date"), "no entry for this device in prices.yaml")
    entry = table["devices"][key]
    return Price(float(entry["price"]), table.get("date"), entry.get("source", ""))


def device_hours(wall_seconds: float, device_count: int) -> float:
    return wall_seconds * device_count / 3600.0


def cost_usd(hours: float, price: Price) -> Optional[float]:
    return None if price.per_device_hour is None else hours * price.per_device_hour
