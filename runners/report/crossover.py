"""Where scratch catches up, and how much data transfer saves. Scratch "catches up" with a transfer mode at a budget
when its mean trails that mode's by at most the equivalence margin (stats.margin: the leaderboard's "adequate");
the crossover n* is the smallest budget from which it does so at every larger budget. Measured from cell means,
predicted from the fitted curves with a 95% interval over their bootstrap draws. The data multiplier (effective data
transferred, Hernandez et al. 2021): the scratch budget whose fitted mean equals a transfer cell's measured mean,
divided by that cell's budget. Pure computation on means and curves.curve fits."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .curves import GRID, LEVEL, RNG_SEED, CurveFit

BEST = "best transfer"  # the crossover with whichever transfer mode is best at each budget
SEARCH = 1000.0  # a scratch budget is sought up to this many times the largest measured; past it: "not reached"
EXTRAPOLATED = 4.0  # a scratch budget past this many times its largest measured is "extrapolated"


def _tail(holds: np.ndarray) -> np.ndarray:
    """Along axis 0: True where `holds` is True from there to the end."""
    return np.flip(np.logical_and.accumulate(np.flip(holds, axis=0), axis=0), axis=0)


def first_from(grid: np.ndarray, holds: np.ndarray):
    """The first grid value from which `holds` stays True (inf where it never does): per column for 2-D."""
    tail = _tail(holds)
    idx = np.argmax(tail, axis=0)
    return np.where(tail.any(axis=0), grid[idx], np.inf)


def _interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [50 * (1 - LEVEL), 50 * (1 + LEVEL)], method="nearest")
    return float(lo), float(hi)


def measured(means: dict[str, dict[int, float]], margins: dict[int, float], sign: int) -> list[dict]:
    """Per transfer mode and for the best transfer mode: the measured crossover from cell means ({mode: {budget:
    mean}}, scratch among them). crossover_budget None: not reached up to the largest budget compared."""
    scratch = means.get("scratch", {})
    modes = [m for m in means if m != "scratch"]
    out = []
    for mode in modes + ([BEST] if len(modes) > 1 else []):
        rivals = modes if mode == BEST else [mode]
        budgets = sorted(n for n in scratch if any(n in means[m] for m in rivals))
        if not budgets:
            continue
        top = {n: max(sign * means[m][n] for m in rivals if n in means[m]) for n in budgets}
        holds = np.array([sign * scratch[n] >= top[n] - margins[n] - 1e-12 for n in budgets])
        at = first_from(np.asarray(budgets, float), holds)
        out.append(dict(mode=mode, crossover_budget=None if math.isinf(at) else int(at), budgets=budgets,
                        largest=budgets[-1], gaps={n: top[n] - sign * scratch[n] for n in budgets}))
    return out


def predicted(fits: dict[str, CurveFit], margin: float, max_factor: float) -> list[dict]:
    """Per fitted transfer mode and for the best of them: the smallest n (up to max_factor × the largest budget
    measured) from which scratch's fitted mean stays within the margin, with a 95% interval over the curves'
    bootstrap draws (each pair of draws gives one crossover or none: "none" counts as beyond the limit)."""
    scratch = fits.get("scratch")
    modes = {m: f for m, f in fits.items() if m != "scratch" and f.fitted}
    if scratch is None or not scratch.fitted or not modes:
        why = ("no scratch curve" if scratch is None else "scratch is not fitted" if not scratch.fitted
               else "no fitted transfer mode")
        return [dict(mode=BEST, crossover_budget=None, reason=why)]
    out = []
    for mode in list(modes) + ([BEST] if len(modes) > 1 else []):
        rivals = list(modes) if mode == BEST else [mode]
        involved = [scratch] + [modes[m] for m in rivals]
        start = max(min(f.points) for f in involved)
        stop = max_factor * max(max(f.points) for f in involved)
        grid = np.unique(np.round(np.geomspace(start, max(stop, start), GRID)))
        s = scratch.sign
        top = np.max([s * modes[m].mean(grid) for m in rivals], axis=0)
        at = first_from(grid, s * scratch.mean(grid) >= top - margin - 1e-12)
        entry = dict(mode=mode, crossover_budget=None if math.isinf(at) else float(at), limit=float(grid[-1]),
                     largest_measured=max(max(f.points) for f in involved), margin=margin,
                     untrusted=[f.key[3] for f in involved if not f.trusted], lo=None, hi=None)
        draws = [f.curve_draws(grid) for f in involved]
        if all(d is not None for d in draws):
            top_d = np.max([s * d for d in draws[1:]], axis=0)
            lo, hi = _interval(first_from(grid, s * draws[0] >= top_d - margin - 1e-12))
            entry.update(lo=lo, hi=None if math.isinf(hi) else hi, beyond=math.isinf(hi))
        out.append(entry)
    return out


def verdict(p: dict) -> str:
    """'at', 'not reached' or 'cannot tell' for a predicted crossover: at only when the point and the whole interval
    lie within the limit; not reached only when fewer than 2.5% of the draws cross within it."""
    if "limit" not in p:
        return "not predicted"
    finite_point = p["crossover_budget"] is not None
    if p["lo"] is None:  # no interval (one seed): the point alone
        return "at" if finite_point else "not reached"
    if not finite_point and math.isinf(p["lo"]):
        return "not reached"
    return "at" if finite_point and not p.get("beyond") else "cannot tell"


def multiplier(scratch: CurveFit, mode: str, budget: int, values: list[float]) -> dict:
    """The scratch budget whose fitted mean equals this transfer cell's measured mean (its seeds' `values`), with a
    95% interval (scratch's bootstrap curves against the cell mean's own seed noise), as a multiple of `budget`."""
    sign = scratch.sign
    target = sign * float(np.mean(values))
    largest, smallest = max(scratch.points), min(scratch.points)
    grid = np.geomspace(smallest / 8, largest * SEARCH, 4 * GRID)
    out = dict(mode=mode, budget=budget, metric=float(np.mean(values)), scratch_budget=None, lo=None, hi=None,
               multiplier=None, multiplier_lo=None, multiplier_hi=None, asymptote=scratch.a,
               higher_is_better=scratch.higher_is_better)
    curve = sign * scratch.mean(grid)
    n = first_from(grid, curve >= target - 1e-12)
    if math.isinf(n):
        out["note"] = "not reached"
    else:
        out["scratch_budget"] = float(n)
        out["multiplier"] = float(n) / budget
        out["note"] = ("extrapolated" if n > EXTRAPOLATED * largest else "past the budgets measured" if n > largest
                       else "below the budgets measured" if n < smallest else "interpolated")
    draws = scratch.curve_draws(grid)
    if draws is not None:
        rng = np.random.default_rng(RNG_SEED)
        se = float(np.std(values, ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
        targets = target + se * rng.standard_normal(draws.shape[-1])
        lo, hi = _interval(first_from(grid, sign * draws >= targets - 1e-12))
        out.update(lo=None if math.isinf(lo) else lo, hi=None if math.isinf(hi) else hi)
        out.update(multiplier_lo=out["lo"] and out["lo"] / budget, multiplier_hi=out["hi"] and out["hi"] / budget)
    out["trusted"] = scratch.trusted
    return out


def headline_entry(entries: list[dict]) -> Optional[dict]:
    """The entry a benchmark's one line quotes: the best transfer cell at the smallest budget measured."""
    if not entries:
        return None
    smallest = min(e["budget"] for e in entries)
    first = [e for e in entries if e["budget"] == smallest]
    return max(first, key=lambda e: (1 if e["higher_is_better"] else -1) * e["metric"])
