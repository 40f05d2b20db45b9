"""How numbers print in every human-readable format (Markdown, HTML, plot labels, verdicts): one place, so the
formats agree to the digit."""
from __future__ import annotations

import math
from typing import Optional

NONE = "—"


def num(x: Optional[float], spec: str = "{:.4f}") -> str:
    return NONE if x is None else spec.format(x)


def metric(x: Optional[float]) -> str:
    return num(x, "{:.4f}")


def signed(x: Optional[float]) -> str:
    return num(x, "{:+.4f}")


def seconds(x: Optional[float]) -> str:
    return num(x, "{:.1f} s")


def significant(x: Optional[float]) -> str:
    """Four significant digits, never in e-notation (0.02, 0.0001463, 1234): small costs stay readable."""
    if x is None:
        return NONE
    digits = 3 - math.floor(math.log10(abs(x))) if x else 0
    return f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits > 0 else f"{x:.0f}"


def money(x: Optional[float]) -> str:
    return NONE if x is None else "$" + significant(x)


def price(x: Optional[float]) -> str:
    return num(x, "${:.4f}")


def hours(x: Optional[float]) -> str:
    return significant(x)


def memory(nbytes: Optional[int]) -> str:
    return num(None if nbytes is None else nbytes / 2**20, "{:.0f} MiB")


def share(x: Optional[float]) -> str:
    return num(None if x is None else 100 * x, "{:.2f}%")


def spread(cell: dict) -> str:
    """'± std (n=k)', or just 'n=1': one seed has no spread, and '± 0' would claim one."""
    if cell["n"] <= 1:
        return f"n={cell['n']}"
    return f"± {metric(cell['metric_std'])} (n={cell['n']})"


def delta(cell: dict) -> str:
    """Δ vs scratch with its 95% interval; why there is none when there is none."""
    if cell["delta_vs_scratch"] is None:
        return NONE
    if cell["mode"] == "scratch":
        return "baseline"
    if cell["delta_ci"] is None:
        return f"{signed(cell['delta_vs_scratch'])} (no CI: n=1)"
    low, high = cell["delta_ci"]
    return f"{signed(cell['delta_vs_scratch'])} [{signed(low)}, {signed(high)}]"


def time_to_target(cell: dict) -> str:
    """Mean over the seeds that reached the target; the share that did when not all did."""
    if cell["target"] is None or not cell["n"]:
        return NONE
    if not cell["target_reached"]:
        return f"0/{cell['n']} reached"
    text = seconds(cell["time_to_target_s"])
    return text if cell["target_reached"] == cell["n"] else f"{text} ({cell['target_reached']}/{cell['n']} reached)"


def budget(cell: dict) -> str:
    return NONE if cell["train_samples"] is None else str(cell["train_samples"])
