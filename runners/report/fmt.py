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


def short_significant(x: Optional[float]) -> str:
    """Two significant digits, never in e-notation (0.00014, 0.52, 13): for the decision table and plot axes."""
    if x is None:
        return NONE
    digits = 1 - math.floor(math.log10(abs(x))) if x else 0
    return f"{x:.{digits}f}" if digits > 0 else f"{x:.0f}"


def money_short(x: Optional[float]) -> str:
    return NONE if x is None else "$" + short_significant(x)


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


def short(x: Optional[float]) -> str:
    """Signed, two significant digits but at least two decimals (+0.31, +0.042, -0.0037): for plain-words lines,
    where four decimals would hide the point and two would round a small gap to +0.00."""
    if x is None:
        return NONE
    digits = max(2, 1 - math.floor(math.log10(abs(x)))) if x else 2
    return f"{x:+.{digits}f}"


def count(n: Optional[int]) -> str:
    return NONE if n is None else f"{n:,}"


def examples(n: Optional[float]) -> str:
    """A predicted number of examples, '2,900': two significant digits past 1,000 (a prediction is not more precise
    than that)."""
    if n is None:
        return NONE
    n = float(n)
    return f"{round(n, -max(0, len(str(int(n))) - 2)):,.0f}"


def improving(cell: dict) -> str:
    """The table's marker: 'still improving k/n' (k runs had not stopped improving when they ended), or ''."""
    return f"still improving {cell['still_improving']}/{cell['n']}" if cell.get("still_improving") else ""


def still_improving(cells: list[dict], most: int = 3) -> str:
    """'finetune still improving at 128 examples (2/3 runs) and 256 examples (1/3 runs), scratch at ...' over the
    cells with runs that had not stopped improving (at most `most` cells named); '' when there is none."""
    cells = [c for c in cells if c.get("still_improving")]
    modes = list(dict.fromkeys(c["mode"] for c in cells))
    named = sorted(cells, key=lambda c: (modes.index(c["mode"]), c["train_samples"] or 0))[:most]
    parts = []
    for mode in dict.fromkeys(c["mode"] for c in named):
        at = " and ".join(f"{count(c['train_samples'])} examples ({c['still_improving']}/{c['n']} runs)"
                          for c in named if c["mode"] == mode)
        parts.append(f"{mode} still improving at {at}")
    more = len(cells) - len(named)
    return ", ".join(parts) + (f", and {more} more cell{'s' * (more > 1)}" if more else "")


def ratio(x: Optional[float]) -> str:
    """'15×', '1.7×', '0.37×': two significant digits, never in e-notation."""
    return NONE if x is None else f"{x:.0f}×" if x >= 10 else f"{x:.2g}×"


def ratio_interval(m: dict) -> str:
    """' [9×, 30×]': a data multiplier's 95% interval ('beyond the search' where scratch's draws do not reach the
    metric), '' without one."""
    if m["multiplier_lo"] is None:
        return ""
    return f" [{ratio(m['multiplier_lo'])}, {ratio(m['multiplier_hi']) if m['multiplier_hi'] else 'beyond the search'}]"


def multiplier(m: dict) -> str:
    """'~600 (15× the data) [9×, 30×]': a scratch-equivalent budget (crossover.multiplier), its data multiplier and
    the multiplier's interval."""
    if m["scratch_budget"] is None:
        return "not reached"
    return f"~{examples(m['scratch_budget'])} ({ratio(m['multiplier'])} the data){ratio_interval(m)}"
