"""Energy of one run, read from hardware energy counters before and after it (microseconds, no sampling thread).

Measured, never estimated:
- GPUs: NVML's total-energy counter of each GPU the run uses (millijoules since the driver loaded; Volta and
  newer). It counts the whole board, so another job on the same GPU would be counted too.
- CPU: the Linux powercap RAPL counters of the CPU packages and their DRAM domains, when this user may read them
  (many kernels made them root-only in 2020). They count the whole package: every process on it.
Where neither is readable the run's energy is None and `note` says why. Tools that report energy without a
counter (codecarbon's fallback) multiply a constant TDP by the wall time: every run of equal length would get
the same number, which device-hours already say, so transferbench does not present that as a measurement.

CO2e = kWh x the grid's carbon intensity: 475 g/kWh unless TRANSFERBENCH_GRID_GCO2_PER_KWH gives your grid's
figure (475 g/kWh is the IEA's world average for 2019, Global Energy & CO2 Status Report 2019; the intensity
used is recorded with every run, so CO2e can be recomputed for another grid).
"""
from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .errors import UserError
from .safe_read import read_text

GRID_ENV = "TRANSFERBENCH_GRID_GCO2_PER_KWH"
WORLD_GCO2_PER_KWH = 475.0  # IEA, world average 2019
POWERCAP = Path("/sys/class/powercap")
JOULES_PER_KWH = 3.6e6
MAX_WATTS = 1000.0  # assumed ceiling of a RAPL zone that states no power limit (DRAM zones often do not)
POLL_SECONDS = 10.0  # a RAPL counter is re-read at most this often by poll(), so that wrap-arounds are seen


@dataclass(frozen=True)
class Energy:
    """What a run's record says about its energy."""

    kwh: Optional[float] = None
    co2_kg: Optional[float] = None
    grid_gco2_per_kwh: Optional[float] = None
    source: Optional[str] = None  # nvml | rapl | nvml+rapl; None: not measured
    note: Optional[str] = None  # the counters read, or why nothing was measured


@dataclass
class _Counter:
    kind: str  # nvml | rapl
    name: str
    read: Callable[[], float]  # joules
    wrap: Optional[float] = None  # joules at which the counter starts again from 0 (RAPL); None: never
    max_watts: Optional[float] = None  # the zone's highest power limit: how fast it can reach `wrap`; None: MAX_WATTS


def grid_intensity() -> float:
    """g CO2e per kWh: TRANSFERBENCH_GRID_GCO2_PER_KWH, else the world average."""
    text = os.environ.get(GRID_ENV)
    if text is None or not text.strip():
        return WORLD_GCO2_PER_KWH
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UserError(f"{GRID_ENV} must be a finite number of grams CO2e per kWh >= 0 (got {text!r})")
    return value


def _read_uj(path: Path) -> float:
    return int(read_text(path, 64)) / 1e6


@functools.lru_cache(maxsize=None)
def rapl_counters() -> tuple[tuple[_Counter, ...], str]:
    """(the readable RAPL package and DRAM counters, why there are none). The class folder lists every zone,
    sub-zones too (intel-rapl:0:1). Core/uncore sub-zones are left out (they are inside their package's count)
    and so is psys (the whole platform, overlapping the packages)."""
    zones = sorted(POWERCAP.glob("intel-rapl:*")) if POWERCAP.is_dir() else []
    if not zones:
        return (), f"no RAPL zones in {POWERCAP}"
    counters, refused = [], []
    for zone in zones:
        try:
            name = read_text(zone / "name", 256).strip()
        except OSError:
            continue
        top = zone.name.count(":") == 1
        if not ((top and name.startswith("package")) or name == "dram"):
            continue
        path = zone / "energy_uj"
        try:
            _read_uj(path)
            wrap = _read_uj(zone / "max_energy_range_uj")
        except PermissionError:
            refused.append(str(path))
            continue
        except (OSError, ValueError):
            continue
        limits = []
        for f in zone.glob("constraint_*_*power*_uw"):
            try:
                limits.append(int(read_text(f, 64)) / 1e6)
            except (OSError, ValueError):
                pass
        label = name if name != "dram" else f"dram ({zone.name})"
        counters.append(_Counter("rapl", label, functools.partial(_read_uj, path), wrap, max(limits, default=None)))
    if counters:
        return tuple(counters), ""
    if refused:
        return (), f"RAPL counters are not readable by this user ({refused[0]}: permission denied)"
    return (), f"no readable RAPL package or DRAM zone in {POWERCAP}"


@functools.lru_cache(maxsize=None)
def _nvml():
    """pynvml, initialised once per process, or the reason it cannot be used."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, ""
    except Exception as err:  # noqa: BLE001 - no library, no driver: not measurable, said why
        return None, f"NVML unavailable ({type(err).__name__}: {str(err)[:80]})"


def nvml_counters(indices: tuple[int, ...]) -> tuple[tuple[_Counter, ...], str]:
    """NVML energy counters of the CUDA devices `indices` (matched by UUID: NVML numbers GPUs in PCI order,
    CUDA fastest first and after CUDA_VISIBLE_DEVICES)."""
    pynvml, why = _nvml()
    if pynvml is None:
        return (), why
    import torch

    counters = []
    for i in indices:
        try:
            uuid = str(torch.cuda.get_device_properties(i).uuid)
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            name = pynvml.nvmlDeviceGetName(handle)
        except Exception as err:  # noqa: BLE001 - e.g. NVML_ERROR_NOT_SUPPORTED before Volta
            return (), f"NVML has no energy counter for CUDA device {i} ({type(err).__name__}: {str(err)[:80]})"
        name = name.decode() if isinstance(name, bytes) else name
        counters.append(_Counter("nvml", f"GPU {i} ({name})",
                                 lambda h=handle: pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3))
    return tuple(counters), ""


_ACTIVE: list["EnergyMeter"] = []


def poll() -> None:
    """Re-read the wrapping counters of the meters now running, at most every POLL_SECONDS: the loops call it
    where they already pause (every few steps), so a long run's RAPL counters cannot wrap unseen. One clock
    read when there is nothing to do."""
    for meter in _ACTIVE:
        if meter._wrapping and time.monotonic() - meter._last >= POLL_SECONDS:
            meter._sample()


class EnergyMeter:
    """Context manager over one run; `.result()` afterwards. `device`: the run's torch device; `device_count`:
    the GPUs of this machine it uses (devices 0..n-1 under a data-parallel launch)."""

    def __init__(self, device, device_count: int = 1):
        self.device, self.device_count = device, device_count
        self.counters: tuple[_Counter, ...] = ()
        self.why: list[str] = []
        self._joules: list[float] = []
        self._prev: list[float] = []
        self._last = 0.0
        self._longest_gap = 0.0
        self._wrapping = False
        self._entered = self._done = False
        self.grid = None

    def __enter__(self):
        self.grid = grid_intensity()
        gpus: tuple[_Counter, ...] = ()
        if getattr(self.device, "type", None) == "cuda":
            first = self.device.index or 0
            gpus, why = nvml_counters(tuple(range(first, first + self.device_count)) if self.device_count > 1
                                      else (first,))
            if why:
                self.why.append(why)
        cpus, why = rapl_counters()
        if why:
            self.why.append(why)
        self.counters = gpus + cpus
        self._wrapping = any(c.wrap for c in self.counters)
        try:
            self._prev = [c.read() for c in self.counters]
        except (OSError, ValueError):  # a counter that read once and not again: not measured, the run goes on
            self.counters, self._prev = (), []
            self.why.append("an energy counter could not be read at the start")
        self._joules = [0.0] * len(self.counters)
        self._last = time.monotonic()
        self._entered = True
        if self._wrapping:
            _ACTIVE.append(self)
        return self

    def _sample(self) -> None:
        now = time.monotonic()
        self._longest_gap = max(self._longest_gap, now - self._last)
        self._last = now
        for i, c in enumerate(self.counters):
            value = c.read()
            delta = value - self._prev[i]
            if delta < 0 and c.wrap:  # wrapped once since the last read
                delta += c.wrap
            self._joules[i] += max(delta, 0.0)
            self._prev[i] = value

    def __exit__(self, *exc):
        if self._entered and not self._done:
            try:
                self._sample()
            except (OSError, ValueError):  # a counter vanished mid-run (driver reload): not measured
                self.counters, self.why = (), self.why + ["an energy counter could not be read at the end"]
            if self in _ACTIVE:
                _ACTIVE.remove(self)
            self._done = True
        return False

    def result(self) -> Energy:
        if not self._done:
            return Energy(note="not measured (the run ended before training started)")
        if not self.counters:
            where = "GPU or CPU" if getattr(self.device, "type", None) == "cuda" else "CPU"
            return Energy(grid_gco2_per_kwh=self.grid,
                          note=f"no {where} energy counter readable on this machine: " + "; ".join(self.why))
        unsure = [c.name for c in self.counters
                  if c.wrap and self._longest_gap * (c.max_watts or MAX_WATTS) >= c.wrap]
        if unsure:
            return Energy(grid_gco2_per_kwh=self.grid,
                          note=f"not measured: RAPL counter(s) {', '.join(unsure)} may have wrapped more than once "
                               f"between two reads ({self._longest_gap:.0f} s apart)")
        kwh = sum(self._joules) / JOULES_PER_KWH
        kinds = sorted({c.kind for c in self.counters}, key=["nvml", "rapl"].index)
        what = "; ".join(f"{c.name}: {j / JOULES_PER_KWH:.6g} kWh" for c, j in zip(self.counters, self._joules))
        missing = f" (not counted: {'; '.join(self.why)})" if self.why else ""
        return Energy(kwh=kwh, co2_kg=kwh * self.grid / 1000, grid_gco2_per_kwh=self.grid, source="+".join(kinds),
                      note=f"{what}{missing}")
