"""Learning curves fitted: a saturating power law per (task, dataset, model, mode), metric(n) = a − b·n^(−c), by
least squares on every seed's point, with bootstrap intervals over seeds and a cost-per-run line; each curve is fitted
once per process. Pure computation: the planner (planner.py) and the report's plots use it."""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections import defaultdict
from typing import Optional

import numpy as np

from .cells import BENCHMARK_KEY, budget_of, run_key

CURVE_KEY = BENCHMARK_KEY + ("mode",)  # a cell's key without its budget
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
    from scipy.optimize import OptimizeWarning, curve_fit  # ~0.5 s: imported when a curve is fitted, not before

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
        points[int(budget_of(r))].append(float(r["metric"]))
    points = dict(sorted(points.items()))
    fit = CurveFit(key, first.get("metric_name") or "metric", bool(first.get("higher_is_better", True)), points,
                   "not fitted", "", cost=cost_line([(budget_of(r), r.get("cost_usd")) for r in rows]),
                   hours=cost_line([(budget_of(r), r.get("device_hours")) for r in rows]))
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
    return [r for r in records if r.get("status") == "ok" and (budget_of(r) or 0) > 0
            and isinstance(r.get("metric"), (int, float)) and math.isfinite(r["metric"])]


def by_curve(records: list[dict]) -> dict[tuple, list[dict]]:
    """The usable records per (task, dataset, model, mode), in a stable order."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in usable(records):
        groups[run_key(r, CURVE_KEY)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))))


_FITS: dict[tuple, CurveFit] = {}  # the report and its plan fit the same curves: each is fitted once a process


def fit_curves(records: list[dict]) -> dict[tuple, CurveFit]:
    """Every curve of the records, fitted or with the reason it is not: (task, dataset, model, mode) -> CurveFit."""
    out = {}
    for key, rows in by_curve(records).items():
        data = (key, tuple((budget_of(r), r["metric"], r.get("cost_usd"), r.get("device_hours"),
                            r.get("metric_name"), r.get("higher_is_better")) for r in rows))
        if data not in _FITS:
            _FITS[data] = fit_curve(key, rows)
        out[key] = _FITS[data]
    return out


def limit(fit: CurveFit, max_factor: float) -> float:
    return max_factor * max(fit.points)


