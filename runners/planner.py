"""The budget planner: fit each curve with a saturating power law, predict metric and cost per run at budgets not
yet run (bootstrap intervals over seeds), find the predicted crossover, the cheapest mode to reach a target and
the best metric under a cost cap, and check the fits by predicting each curve's largest budget from the others.
Pure computation; planner_report renders it. Never imports report (report may import this to draw fits)."""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections import defaultdict
from typing import Optional

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from transferbench.errors import UserError

from .merge import check_configs

CURVE_KEY = ("task", "dataset", "model", "mode")
MIN_BUDGETS = 3  # three parameters: fewer distinct budgets cannot pin a, b and c
R2_MIN = 0.8  # below this on the cell means a fit is "poor fit": its predictions are shown, not trusted
BOOTSTRAP = 200
LEVEL = 0.95
RNG_SEED = 0  # fixed: the same store always gives the same intervals
C_BOUNDS = (0.01, 3.0)
GRID = 600  # log-spaced points for the crossover search (~1% resolution over a 64× range)
EPS = 1e-12


def _power(x, A, B, C):
    """Score space (higher is better) on x = n / n_ref: A − B·x^(−C)."""
    return A - B * np.power(x, -C)


def _jacobian(x, A, B, C):
    """Analytic: about half the function evaluations of finite differences, over 200 bootstrap refits."""
    t = np.power(x, -C)
    return np.column_stack([np.ones_like(x), -t, B * t * np.log(x)])


@dataclasses.dataclass
class CostLine:
    """Least squares per run: value(n) = alpha + beta·n over the ok runs; clamped at 0 (a negative intercept
    must not predict a negative bill below the budgets measured)."""
    alpha: float
    beta: float
    runs: int

    def __call__(self, n: float) -> float:
        return max(0.0, self.alpha + self.beta * n)


def cost_line(points: list[tuple[float, float]]) -> Optional[CostLine]:
    """None with fewer than two distinct budgets: a slope needs two."""
    pts = [(n, v) for n, v in points if v is not None and math.isfinite(v)]
    if len({n for n, _ in pts}) < 2:
        return None
    beta, alpha = np.polyfit([float(n) for n, _ in pts], [v for _, v in pts], 1)
    return CostLine(float(alpha), float(beta), len(pts))


@dataclasses.dataclass
class CurveFit:
    """One (task, dataset, model, mode) curve. metric(n) = a − b·n^(−c) (lower is better: a + b·n^(−c))."""
    key: tuple
    metric_name: str
    higher_is_better: bool
    points: dict[int, list[float]]  # budget -> one metric per seed
    status: str  # ok | poor fit | flat | not fitted
    reason: str
    a: Optional[float] = None
    b: Optional[float] = None
    c: Optional[float] = None
    r2: Optional[float] = None
    cost: Optional[CostLine] = None  # USD per run
    hours: Optional[CostLine] = None  # device-hours per run
    n_ref: float = 1.0
    params: Optional[np.ndarray] = None  # (A, B, C) in score space, x = n / n_ref
    boot: Optional[np.ndarray] = None  # bootstrap (A, B, C) rows; None: no interval (one seed per budget)

    @property
    def sign(self) -> int:
        return 1 if self.higher_is_better else -1

    @property
    def fitted(self) -> bool:
        return self.params is not None

    @property
    def budgets(self) -> list[int]:
        return sorted(self.points)

    @property
    def means(self) -> list[float]:
        return [float(np.mean(self.points[n])) for n in self.budgets]

    @property
    def seed_std(self) -> Optional[float]:
        """Mean over budgets of the sample std over seeds (budgets with ≥ 2 seeds): the crossover's 'one std'."""
        stds = [float(np.std(v, ddof=1)) for v in self.points.values() if len(v) > 1]
        return float(np.mean(stds)) if stds else None

    def predict(self, n):
        """(mean, lo, hi) of the predicted mean metric at n: floats for a scalar n (lo, hi None without an
        interval), arrays for an array (nan without an interval). A curve that is not fitted raises ValueError."""
        if not self.fitted:
            raise ValueError(f"{' · '.join(map(str, self.key))} is not fitted: {self.reason}")
        x = np.asarray(n, dtype=float) / self.n_ref
        mean = self.sign * _power(x, *self.params)
        if self.boot is None:
            lo = hi = np.full_like(mean, np.nan)
        else:
            draws = self.sign * _power(x[..., None], *self.boot.T)
            lo, hi = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)], axis=-1)
            lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        if np.ndim(n) == 0:
            return float(mean), *(None if np.isnan(v) else float(v) for v in (lo, hi))
        return mean, lo, hi


def _bounds(scores: np.ndarray, bounded: bool) -> tuple[float, float]:
    """Where the asymptote A may lie (score space): no worse than the worst point; for metrics in [0, 1]
    (accuracy, F1, mAP, error rates) inside [0, 1]; otherwise up to 10 spans past the best point."""
    low = float(scores.min())
    span = float(scores.max() - low) or 1.0
    high = (1.0 if scores.max() > 0 else 0.0) if bounded else float(scores.max()) + 10 * span
    return low, max(high, low + 1e-9)


def _fit_once(x, y, p0, lo, hi):
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(_power, x, y, p0=p0, bounds=([lo, 0.0, C_BOUNDS[0]], [hi, np.inf, C_BOUNDS[1]]),
                             jac=_jacobian, method="trf", maxfev=2000)
    except (RuntimeError, ValueError, FloatingPointError):
        return None, math.inf
    sse = float(np.sum((_power(x, *p) - y) ** 2))
    return (p, sse) if math.isfinite(sse) else (None, math.inf)


def _fit(x, y, lo, hi, starts):
    best, best_sse = None, math.inf
    for p0 in starts:
        p0 = [min(max(p0[0], lo + 1e-9), hi - 1e-9), max(p0[1], 1e-9), min(max(p0[2], C_BOUNDS[0]), C_BOUNDS[1])]
        p, sse = _fit_once(x, y, p0, lo, hi)
        if sse < best_sse:
            best, best_sse = p, sse
    return best


def _resamples(x: np.ndarray, y: np.ndarray, rng):
    """Resample the seeds at each budget with replacement (the budgets stay: the design fixes them)."""
    groups = [np.flatnonzero(x == v) for v in np.unique(x)]
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        yield x[idx], y[idx]


def fit_curve(key: tuple, rows: list[dict]) -> CurveFit:
    """Fit one curve from its ok records (metric per seed per budget)."""
    first = rows[0]
    points: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        points[int(r["train_samples"])].append(float(r["metric"]))
    points = dict(sorted(points.items()))
    fit = CurveFit(key, first.get("metric_name") or "metric", bool(first.get("higher_is_better", True)), points,
                   "not fitted", "", cost=cost_line([(r["train_samples"], r.get("cost_usd")) for r in rows]),
                   hours=cost_line([(r["train_samples"], r.get("device_hours")) for r in rows]))
    if len(points) < MIN_BUDGETS:
        fit.reason = f"{len(points)} budget{'s' * (len(points) != 1)}; a fit needs at least {MIN_BUDGETS}"
        return fit
    s = fit.sign
    fit.n_ref = float(min(points))
    x = np.concatenate([[n / fit.n_ref] * len(v) for n, v in points.items()])
    y = s * np.concatenate(list(points.values()))
    means = s * np.asarray(fit.means)
    bounded = all(0.0 <= v <= 1.0 for vs in points.values() for v in vs)
    lo, hi = _bounds(y, bounded)
    rng = np.random.default_rng(RNG_SEED)
    several = any(len(v) > 1 for v in points.values())
    pooled = math.sqrt(np.mean([np.var(v, ddof=1) for v in points.values() if len(v) > 1])) if several else 0.0
    spread = float(means.max() - means.min())
    if spread <= max(pooled, 1e-9 * max(1.0, abs(float(means.mean())))):
        # nothing for a curve to explain: the prediction is the mean of the cell means, everywhere
        fit.status = "flat"
        fit.reason = (f"cell means span {spread:.4g}, within the seeds' own std ({pooled:.4g}): predicted = the mean"
                      if spread > 1e-12 else "every budget measured the same value: predicted = that value")
        fit.params = np.array([float(means.mean()), 0.0, 1.0])
        if several:  # the mean of the cell means, with each budget's seeds resampled
            fit.boot = np.array([[np.mean([s * np.mean(rng.choice(v, len(v))) for v in points.values()]), 0.0, 1.0]
                                 for _ in range(BOOTSTRAP)])
        fit.a, fit.b, fit.c = s * fit.params[0], 0.0, None
        return fit
    top = float(means.max())
    span = top - float(means.min())
    starts = [(top + k * span, top + k * span - float(means[0]), c0) for k in (0.1, 0.5, 2.0) for c0 in (0.2, 0.5, 1.0)]
    params = _fit(x, y, lo, hi, starts)
    if params is None:
        fit.reason = "the least-squares fit did not converge from any starting point"
        return fit
    fit.params = params
    pred = _power(np.asarray(fit.budgets) / fit.n_ref, *params)
    fit.r2 = float(1 - np.sum((means - pred) ** 2) / np.sum((means - means.mean()) ** 2))
    fit.a, fit.b, fit.c = s * float(params[0]), float(params[1] * fit.n_ref ** params[2]), float(params[2])
    if several:
        boot = [p for xx, yy in _resamples(x, y, rng) if (p := _fit(xx, yy, lo, hi, [params])) is not None]
        fit.boot = np.asarray(boot) if boot else None
    fit.status = "ok" if fit.r2 >= R2_MIN else "poor fit"
    rise = float(pred[-1] - pred[0])  # a collapsed fit (b → 0) says the means show no gain with data
    fit.reason = (f"R² {fit.r2:.3f}" + (f" < {R2_MIN}: the power law does not describe these means; predictions "
                                          "are shown, not trusted" if fit.r2 < R2_MIN else "")
                  + (" (the best fit is a constant: no gain with more data)" if rise < 1e-6 else "")
                  + ("" if fit.boot is not None else "; one seed per budget: no interval"))
    return fit


def usable(records: list[dict]) -> list[dict]:
    """ok runs with a finite metric and a resolved budget."""
    return [r for r in records if r.get("status") == "ok" and r.get("train_samples") is not None
            and isinstance(r.get("metric"), (int, float)) and math.isfinite(r["metric"]) and r["train_samples"] > 0]


def by_curve(records: list[dict]) -> dict[tuple, list[dict]]:
    """The usable records per (task, dataset, model, mode), in a stable order."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in usable(records):
        groups[tuple(r.get(k) for k in CURVE_KEY)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))))


_FITS: dict[tuple, CurveFit] = {}  # the report and its plan fit the same curves: each is fitted once a process


def fit_curves(records: list[dict]) -> dict[tuple, CurveFit]:
    """Every curve of the records, fitted or with the reason it is not: (task, dataset, model, mode) -> CurveFit."""
    out = {}
    for key, rows in by_curve(records).items():
        data = (key, tuple((r["train_samples"], r["metric"], r.get("cost_usd"), r.get("device_hours"),
                            r.get("metric_name"), r.get("higher_is_better")) for r in rows))
        if data not in _FITS:
            _FITS[data] = fit_curve(key, rows)
        out[key] = _FITS[data]
    return out


def limit(fit: CurveFit, max_factor: float) -> float:
    return max_factor * max(fit.points)


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
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(x) else float(x)
    return x.item() if isinstance(x, np.generic) else x


def validate(records: list[dict]) -> dict:
    """Each curve with ≥ MIN_BUDGETS + 1 budgets: fit on all but the largest, predict the largest."""
    out, errors = [], defaultdict(list)
    for key, rs in by_curve(records).items():
        largest = max(r["train_samples"] for r in rs)
        if len({r["train_samples"] for r in rs}) < MIN_BUDGETS + 1:
            continue
        fit = fit_curve(key, [r for r in rs if r["train_samples"] != largest])
        held = [r["metric"] for r in rs if r["train_samples"] == largest]
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
    measured = {key: {r["train_samples"] for r in rs} for key, rs in by_curve(rows).items()}
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
