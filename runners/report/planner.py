"""The budget planner: from the fitted curves (curves.py), predict metric and cost per run at budgets not yet run, the
crossover and the data multiplier (crossover.py), the cheapest mode to reach a target and the best metric under a
cost cap; and check itself: each curve's largest budget predicted from the others (the intervals' coverage), and each
measured crossover predicted from budgets at most a quarter of it. Pure computation; planner_report renders it."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Optional

import numpy as np

from transferbench.errors import UserError

from . import crossover as xo
from .cells import budget_of, run_key
from .curves import (BOOTSTRAP, CURVE_KEY, GRID, LEVEL, MIN_BUDGETS, OK_BUDGETS, R2_MIN, CurveFit, by_curve,
                     fit_curve, fit_curves, limit, usable)
from .families import FAMILIES
from .merge import check_configs
from .stats import margin as cell_margin

HINDCAST = 4  # a measured crossover is predicted from the budgets at most this many times smaller
AGREES = 2.0  # ... and the prediction agrees when within this factor of it


def reach(fit: CurveFit, target: float, max_factor: float) -> dict:
    """Smallest n in [smallest measured, limit] where the fitted mean reaches the target."""
    first, last = min(fit.points), limit(fit, max_factor)
    grid = np.geomspace(first, last, 4 * GRID)
    n = xo.first_from(grid, fit.sign * fit.mean(grid) >= fit.sign * target - 1e-12)
    if math.isinf(n):
        return dict(mode=fit.key[3], n=None, reason=f"not predicted below {last:,.0f} examples")
    return dict(mode=fit.key[3], n=float(n), at_smallest=n == first, cost_usd=fit.cost and fit.cost(n),
                device_hours=fit.hours and fit.hours(n), mean=fit.mean(n))


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
    params = None if not fit.fitted else [float(p) for p in fit.params]
    return dict(zip(CURVE_KEY, fit.key), metric_name=fit.metric_name, higher_is_better=fit.higher_is_better,
                budgets=fit.budgets, means=fit.means, seeds=[len(fit.points[n]) for n in fit.budgets],
                seed_std=fit.seed_std, status=fit.status, reason=fit.reason, family=fit.family, choice=fit.choice,
                family_errors=fit.errors, params=params, n_ref=fit.n_ref, a=fit.a, r2=fit.r2,
                interval=fit.interval, cost_usd=line(fit.cost), device_hours=line(fit.hours))


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


def _benchmarks(rows: list[dict]) -> dict[tuple, dict[str, list[dict]]]:
    """(task, dataset, model) -> mode -> its usable records."""
    out: dict[tuple, dict[str, list[dict]]] = defaultdict(dict)
    for key, rs in by_curve(rows).items():
        out[key[:3]][key[3]] = rs
    return out


def _cell_means(by_mode: dict[str, list[dict]]) -> tuple[dict, dict, int]:
    """({mode: {budget: mean}}, {budget: the leaderboard's equivalence margin}, sign) from records."""
    cells: dict[int, list[dict]] = defaultdict(list)
    means: dict[str, dict[int, float]] = defaultdict(dict)
    higher = True
    for mode, rs in by_mode.items():
        per: dict[int, list] = defaultdict(list)
        for r in rs:
            per[int(budget_of(r))].append(r)
        for n, group in per.items():
            higher = bool(group[0].get("higher_is_better", True))
            means[mode][n] = float(np.mean([r["metric"] for r in group]))
            evals = [r["eval_samples"] for r in group if r.get("eval_samples")]
            cells[n].append(dict(n=len(group), metric_mean=means[mode][n], higher_is_better=higher,
                                 eval_samples=min(evals) if evals else None))
    return dict(means), {n: cell_margin(cs) for n, cs in cells.items()}, 1 if higher else -1


def _fits(by_mode: dict[str, list[dict]], keep=None) -> dict[str, CurveFit]:
    """Fitted curves per mode, on the budgets `keep` admits (all when None)."""
    out = {}
    for mode, rs in by_mode.items():
        rs = [r for r in rs if keep is None or keep(budget_of(r))]
        if len({budget_of(r) for r in rs}) >= MIN_BUDGETS:
            out[mode] = fit_curve(run_key(rs[0], CURVE_KEY), rs)
    return out


def validate(records: list[dict]) -> dict:
    """Each curve with ≥ OK_BUDGETS budgets: fitted on all but the largest (family chosen on those alone), its
    prediction and 95% interval for the largest's measured mean; the coverage of the intervals."""
    out = []
    for key, rs in by_curve(records).items():
        largest = max(budget_of(r) for r in rs)
        if len({budget_of(r) for r in rs}) < OK_BUDGETS:
            continue
        fit = fit_curve(key, [r for r in rs if budget_of(r) != largest])
        held = [r["metric"] for r in rs if budget_of(r) == largest]
        measured = float(np.mean(held))
        entry = dict(zip(CURVE_KEY, key), fit_on=fit.budgets, largest=largest, measured=measured,
                     measured_std=float(np.std(held, ddof=1)) if len(held) > 1 else None,
                     status=fit.status, family=fit.family, reason=fit.reason)
        if fit.fitted:
            mean, lo, hi = fit.predict(largest)
            entry.update(predicted=mean, lo=lo, hi=hi, abs_error=abs(mean - measured),
                         inside=None if lo is None else lo - 1e-9 <= measured <= hi + 1e-9)
        out.append(entry)
    checked = [e for e in out if e.get("inside") is not None]
    groups: dict[tuple, list] = defaultdict(list)
    for e in out:
        if "abs_error" in e:
            groups[tuple(e[k] for k in CURVE_KEY[:3])].append(e["abs_error"])
    mae = [dict(zip(CURVE_KEY[:3], k), mae=float(np.mean(v)), curves=len(v)) for k, v in groups.items()]
    coverage = dict(inside=sum(e["inside"] for e in checked), checked=len(checked), level=LEVEL)
    return dict(curves=out, mae=mae, coverage=coverage)


def hindcast(rows: list[dict], max_factor: float = 4.0) -> list[dict]:
    """Each measured crossover (and each 'not reached up to N') predicted from the budgets ≤ n*/4 (N/4) alone, with
    the limit at max_factor × the largest of those: does the prediction land within a factor 2 (or say 'cannot
    tell' with an interval that contains it)?"""
    out = []
    for key, by_mode in _benchmarks(rows).items():
        if "scratch" not in by_mode:
            continue
        means, margins, sign = _cell_means(by_mode)
        for m in xo.measured(means, margins, sign):
            at = m["crossover_budget"]
            reference = at if at is not None else m["largest"]
            keep = lambda n: n * HINDCAST <= reference  # noqa: E731
            modes = list(means) if m["mode"] == xo.BEST else ["scratch", m["mode"]]
            fits = _fits({k: v for k, v in by_mode.items() if k in modes}, keep)
            entry = dict(zip(CURVE_KEY[:3], key), mode=m["mode"], measured=at, largest=m["largest"],
                         fit_on=sorted({b for f in fits.values() for b in f.points}))
            if "scratch" not in fits or len(fits) < 2 or (m["mode"] != xo.BEST and m["mode"] not in fits):
                entry.update(outcome="too few budgets below a quarter of it", predicted=None)
                out.append(entry)
                continue
            margin = max(margins[n] for n in margins if keep(n))
            candidates = xo.predicted(fits, margin, max_factor)  # one transfer mode fitted: it is the best
            p = next((x for x in candidates if x["mode"] == m["mode"]), candidates[-1])
            said = xo.verdict(p)
            entry.update(predicted=p["crossover_budget"], lo=p["lo"], hi=p["hi"], limit=p["limit"], said=said)
            if at is None:
                hit = said == "not reached" or (said == "cannot tell" and (p["hi"] is None or p["hi"] > reference))
            elif said == "at":
                hit = at / AGREES <= p["crossover_budget"] <= at * AGREES
            else:
                hit = said == "cannot tell" and p["lo"] <= at and (p["hi"] is None or at <= p["hi"])
            entry["outcome"] = "agrees" if hit else "misses"
            out.append(entry)
    return out


def multipliers(rows: list[dict]) -> list[dict]:
    """For each transfer cell, the scratch budget reaching its measured mean on scratch's fitted curve."""
    out = []
    for key, by_mode in _benchmarks(rows).items():
        fits = fit_curves([r for rs in by_mode.values() for r in rs])
        scratch = fits.get((*key, "scratch"))
        if scratch is None or not scratch.fitted:
            continue
        for mode, rs in by_mode.items():
            if mode == "scratch":
                continue
            per: dict[int, list[float]] = defaultdict(list)
            for r in rs:
                per[int(budget_of(r))].append(float(r["metric"]))
            for n, values in sorted(per.items()):
                out.append(dict(zip(CURVE_KEY[:3], key), scratch_status=scratch.status,
                                **xo.multiplier(scratch, mode, n, values)))
    return out


def plan(records: list[dict], target: Optional[float] = None, budgets=None, max_cost: Optional[float] = None,
         max_factor: float = 4.0) -> dict:
    """Fits, predictions (default: the measured budgets, 2× and 4× the largest, capped by max_factor), crossovers
    (measured and predicted), data multipliers, the cheapest mode to reach `target`, the best metric per mode under
    `max_cost`, and the planner's checks of itself."""
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
    for n in budgets or ():  # before any fitting: a refusal should not wait for the bootstrap refits
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
    crossovers, targets = [], []
    for key, by_mode in _benchmarks(rows).items():
        modes = {m: fits[(*key, m)] for m in by_mode}
        means, margins, sign = _cell_means(by_mode)
        margin = max(margins.values())
        crossovers.append(dict(zip(CURVE_KEY[:3], key), margin=margin,
                               measured=xo.measured(means, margins, sign) if "scratch" in means else [],
                               predicted=xo.predicted(modes, margin, max_factor)))
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
                      bootstrap=BOOTSTRAP, level=LEVEL, min_budgets=MIN_BUDGETS, ok_budgets=OK_BUDGETS,
                      families={n: f.formula for n, f in FAMILIES.items()}),
        curves=curves, crossovers=crossovers, multipliers=multipliers(rows), targets=targets,
        validation=validate(rows), hindcast=hindcast(rows, max_factor)))
