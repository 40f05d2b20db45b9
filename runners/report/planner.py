"""The budget planner: from the fitted curves (curves.py), predict metric and cost per run at budgets not yet run,
find the predicted crossover, the cheapest mode to reach a target and the best metric under a cost cap, and check
the fits by predicting each curve's largest budget from the others. Pure computation; planner_report renders it."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional

import numpy as np

from transferbench.errors import UserError

from .cells import budget_of
from .curves import (BOOTSTRAP, CURVE_KEY, EPS, GRID, LEVEL, MIN_BUDGETS, R2_MIN, CurveFit, by_curve, fit_curve,
                     fit_curves, limit, usable)
from .merge import check_configs


def _search_grid(fits: list[CurveFit], max_factor: float) -> np.ndarray:
    start = max(min(f.points) for f in fits)
    stop = min(limit(f, max_factor) for f in fits)
    return np.unique(np.round(np.geomspace(start, max(stop, start), GRID)))


def crossover(fits: dict[str, CurveFit], max_factor: float) -> dict:
    """Smallest predicted n from which scratch stays within one std of the best transfer mode up to the limit.
    The std: the best transfer mode's (at each n) mean seed std over its measured budgets."""
    scratch = fits.get("scratch")
    transfer = {m: f for m, f in fits.items() if m != "scratch" and f.fitted}
    if scratch is None or not scratch.fitted or not transfer:
        why = ("scratch is not fitted" if scratch is not None and not scratch.fitted else
               "no scratch curve" if scratch is None else "no fitted transfer mode")
        return dict(crossover_budget=None, reason=why)
    grid = _search_grid([scratch, *transfer.values()], max_factor)
    preds = {m: f.sign * f.predict(grid)[0] for m, f in transfer.items()}
    best = np.array([max(preds, key=lambda m: preds[m][i]) for i in range(len(grid))])
    gap = np.array([preds[m][i] for i, m in enumerate(best)]) - scratch.sign * scratch.predict(grid)[0]
    std = np.array([transfer[m].seed_std or 0.0 for m in best])
    holds = gap <= std + EPS
    tail = np.flip(np.logical_and.accumulate(np.flip(holds)))  # holds from here up to the limit
    idx = int(np.argmax(tail)) if tail.any() else None
    at = None if idx is None else float(grid[idx])
    mode = str(best[idx]) if idx is not None else str(best[-1])
    return dict(crossover_budget=at, best_mode=mode, std=float(std[idx if idx is not None else -1]),
                limit=float(grid[-1]), largest_measured=max(max(f.points) for f in [scratch, *transfer.values()]),
                poor=[m for m in ["scratch", *sorted(set(best))] if fits[m].status == "poor fit"])


def reach(fit: CurveFit, target: float, max_factor: float) -> dict:
    """Smallest n in [smallest measured, limit] where the predicted mean reaches the target (exact inversion)."""
    A, B, C = fit.params
    t = fit.sign * target
    first, last = min(fit.points), limit(fit, max_factor)
    if B <= 0 or A <= t:  # flat, or the asymptote never gets there
        n = first if A >= t else None
    else:
        n = max(first, fit.n_ref * (B / (A - t)) ** (1 / C))
    if n is None or n > last:
        return dict(mode=fit.key[3], n=None, reason=f"not predicted below {last:,.0f} examples")
    return dict(mode=fit.key[3], n=float(n), at_smallest=n == first, cost_usd=fit.cost and fit.cost(n),
                device_hours=fit.hours and fit.hours(n), mean=fit.predict(n)[0])


def afford(fit: CurveFit, max_cost: float, max_factor: float) -> dict:
    """Largest n in [smallest measured, limit] whose predicted cost per run ≤ max_cost: the curve is monotone,
    so the best predicted metric under the cap sits there."""
    first, last = min(fit.points), limit(fit, max_factor)
    if fit.cost is None:
        return dict(n=None, reason="no cost line (runs without cost_usd, or one budget)")
    if fit.cost(first) > max_cost:
        return dict(n=None, reason=f"a run at {first:,} examples is predicted to cost ${fit.cost(first):.4g}")
    n = last if fit.cost.beta <= 0 else min(last, (max_cost - fit.cost.alpha) / fit.cost.beta)
    n = first if fit.status == "flat" else n  # the same metric everywhere: the cheapest budget gets it
    mean, lo, hi = fit.predict(n)
    return dict(n=float(n), mean=mean, lo=lo, hi=hi, cost_usd=fit.cost(n), capped=n == last)


def _number(value, flag: str, low: float, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be {what}, not {value!r}") from None
    if not math.isfinite(x) or x < low:
        raise UserError(f"{flag} must be {what} (>= {low:g}), not {value!r}")
    return x


def _check_target(target: float, rows: list[dict]) -> None:
    """Catch a target in the wrong units (90 for 0.9 accuracy) before it silently reads 'never reached'."""
    values = [r["metric"] for r in rows]
    if target < 0 <= min(values):
        raise UserError(f"--target {target:g} is negative but every metric in the store is >= 0")
    if target > 1 and 0 <= min(values) and max(values) <= 1:
        raise UserError(f"--target {target:g} is above 1 but the metrics lie in [0, 1] (write 0.9, not 90)")


def _curve_dict(fit: CurveFit) -> dict:
    line = lambda c: c and dict(alpha=c.alpha, beta=c.beta, runs=c.runs)  # noqa: E731
    return dict(zip(CURVE_KEY, fit.key), metric_name=fit.metric_name, higher_is_better=fit.higher_is_better,
                budgets=fit.budgets, means=fit.means, seeds=[len(fit.points[n]) for n in fit.budgets],
                seed_std=fit.seed_std, status=fit.status, reason=fit.reason, a=fit.a, b=fit.b, c=fit.c, r2=fit.r2,
                interval=fit.boot is not None, cost_usd=line(fit.cost), device_hours=line(fit.hours))


def _prediction(fit: CurveFit, n: float) -> dict:
    mean, lo, hi = fit.predict(n)
    largest = max(fit.points)
    measured = fit.points.get(int(n)) if float(n).is_integer() else None
    return dict(n=n, mean=mean, lo=lo, hi=hi, cost_usd=fit.cost and fit.cost(n), device_hours=fit.hours and
                fit.hours(n), measured=None if measured is None else float(np.mean(measured)),
                extrapolated=n / largest if n > largest else None, below_measured=n < min(fit.points))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):  # 6 significant digits: fits differ in the last bits across CPUs
        return None if not math.isfinite(x) else float(f"{float(x):.6g}")
    return x.item() if isinstance(x, np.generic) else x


def validate(records: list[dict]) -> dict:
    """Each curve with ≥ MIN_BUDGETS + 1 budgets: fit on all but the largest, predict the largest."""
    out, errors = [], defaultdict(list)
    for key, rs in by_curve(records).items():
        largest = max(budget_of(r) for r in rs)
        if len({budget_of(r) for r in rs}) < MIN_BUDGETS + 1:
            continue
        fit = fit_curve(key, [r for r in rs if budget_of(r) != largest])
        held = [r["metric"] for r in rs if budget_of(r) == largest]
        measured = float(np.mean(held))
        entry = dict(zip(CURVE_KEY, key), fit_on=fit.budgets, largest=largest, measured=measured,
                     measured_std=float(np.std(held, ddof=1)) if len(held) > 1 else None,
                     status=fit.status, reason=fit.reason)
        if fit.fitted:
            mean, lo, hi = fit.predict(largest)
            entry.update(predicted=mean, lo=lo, hi=hi, abs_error=abs(mean - measured),
                         inside=None if lo is None else lo - EPS <= measured <= hi + EPS)
            errors[key[:3]].append(entry["abs_error"])
        out.append(entry)
    mae = [dict(zip(CURVE_KEY[:3], k), mae=float(np.mean(v)), curves=len(v)) for k, v in errors.items()]
    return dict(curves=out, mae=mae)


def plan(records: list[dict], target: Optional[float] = None, budgets=None, max_cost: Optional[float] = None,
         max_factor: float = 4.0) -> dict:
    """Fits, predictions (default: the measured budgets, 2× and 4× the largest, capped by max_factor), predicted
    crossovers, the cheapest mode to reach `target`, the best metric per mode under `max_cost`, validation."""
    max_factor = _number(max_factor, "--max-factor", 1.0, "a factor")
    max_cost = None if max_cost is None else _number(max_cost, "--max-cost", 0.0, "a dollar amount")
    target = None if target is None else _number(target, "--target", -math.inf, "a metric value")
    budgets = None if budgets is None else [_number(n, "--budgets", 1.0, "numbers of examples") for n in budgets]
    rows = usable(records)
    if not rows:
        raise UserError("no ok run with a metric and a training budget to plan from")
    check_configs(rows)
    if target is not None:
        _check_target(target, rows)
    measured = {key: {budget_of(r) for r in rs} for key, rs in by_curve(rows).items()}
    most = max(len(b) for b in measured.values())
    if most < MIN_BUDGETS:
        raise UserError(f"no curve has {MIN_BUDGETS} or more budgets (at most {most} per task, dataset, model and "
                        f"mode); run the suite at {MIN_BUDGETS}+ train_samples values before planning")
    for n in budgets or ():  # before any fitting: a refusal should not wait for 200 bootstrap refits per curve
        for key, ns in measured.items():
            if len(ns) >= MIN_BUDGETS and n > max_factor * max(ns):
                raise UserError(f"budget {n:,.0f} is beyond {max_factor:g}× the largest budget measured for "
                                f"{' · '.join(map(str, key))} ({max(ns):,} → at most {max_factor * max(ns):,.0f}); "
                                "the fit is not trusted further (--max-factor)")
    fits = fit_curves(rows)
    factors = sorted({min(k, max_factor) for k in (2.0, 4.0)} - {1.0})
    curves = []
    for f in fits.values():
        entry = _curve_dict(f)
        ns = budgets or sorted(set(map(float, f.points)) | {max(f.points) * k for k in factors})
        entry["predictions"] = [_prediction(f, n) for n in ns] if f.fitted else []
        if max_cost is not None and f.fitted:
            entry["max_cost"] = afford(f, max_cost, max_factor)
        curves.append(entry)
    groups: dict[tuple, dict[str, CurveFit]] = defaultdict(dict)
    for f in fits.values():
        groups[f.key[:3]][f.key[3]] = f
    crossovers, targets = [], []
    for key, modes in groups.items():
        crossovers.append(dict(zip(CURVE_KEY[:3], key), **crossover(modes, max_factor)))
        if target is not None:
            reached = [reach(f, target, max_factor) for f in modes.values() if f.fitted]
            hits = [r for r in reached if r["n"] is not None]
            by = next((k for k in ("cost_usd", "device_hours", "n") if all(r[k] is not None for r in hits)), "n")
            best = min(hits, key=lambda r: (r[by], r["n"])) if hits else None
            targets.append(dict(zip(CURVE_KEY[:3], key), target=target, modes=reached, cheapest_by=by,
                                cheapest=best and best["mode"],
                                not_fitted=[m for m, f in modes.items() if not f.fitted]))
    return _jsonable(dict(
        settings=dict(target=target, budgets=budgets, max_cost=max_cost, max_factor=max_factor, r2_min=R2_MIN,
                      bootstrap=BOOTSTRAP, level=LEVEL, min_budgets=MIN_BUDGETS),
        curves=curves, crossovers=crossovers, targets=targets, validation=validate(rows)))
