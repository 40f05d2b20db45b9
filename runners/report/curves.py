"""Learning curves fitted, one per (task, dataset, model, mode): each family of families.py fitted by least squares
on every seed's point, the one kept that predicts the largest budget best from the others (leave-last-out; AICc when
a curve has too few budgets for that), and 95% intervals that include what a held-out measurement carries: a
parametric bootstrap that redraws each budget's seeds (their pooled std) and the curve's misfit (the cell means'
scatter about it beyond the seeds' own), refits, mixes in the other families by their evidence, and adds the noise of
a new cell's mean. Each curve is fitted once per process. Pure computation: the planner and the plots use it."""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections import defaultdict
from typing import Optional

import numpy as np

from .cells import BENCHMARK_KEY, budget_of, run_key
from .families import DEFAULT, FAMILIES, Family

CURVE_KEY = BENCHMARK_KEY + ("mode",)  # a cell's key without its budget
MIN_BUDGETS = 3  # fewer distinct budgets cannot pin a three-parameter curve: not fitted
OK_BUDGETS = 4  # three parameters fitted to three budgets pass any quality test by construction: never "ok"
R2_MIN = 0.8  # below this on the cell means a fit is a "poor fit": its predictions are shown, not trusted
BOOTSTRAP = 200
LEVEL = 0.95
RNG_SEED = 0  # fixed: the same store always gives the same intervals
GRID = 600  # log-spaced points for searches over n (~1% resolution over a 64× range)
EPS = 1e-12
TRUSTED = ("ok", "flat")  # statuses whose predictions a verdict may rest on


def _constant(x, A):
    return A + 0.0 * x


def _constant_setup(x, y, lo, hi):
    return ([lo], [hi]), [(float(np.mean(y)),)]


CONSTANT = Family("constant", "a", _constant, lambda x, A: np.ones((len(x), 1)), 1, _constant_setup)  # a flat curve: the mean of the cell means, everywhere


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
    """One (task, dataset, model, mode) curve, fitted in score space (higher is better) on x = n / n_ref."""
    key: tuple
    metric_name: str
    higher_is_better: bool
    points: dict[int, list[float]]  # budget -> one metric per seed
    status: str  # ok | few budgets | poor fit | ill-behaved | flat | not fitted
    reason: str
    bounded: bool = False  # every value in [0, 1]: predictions are clipped there
    family: Optional[str] = None
    choice: str = ""  # how the family was chosen, in words
    errors: dict = dataclasses.field(default_factory=dict)  # family -> leave-last-out abs error (or AICc)
    r2: Optional[float] = None
    cost: Optional[CostLine] = None  # USD per run
    hours: Optional[CostLine] = None  # device-hours per run
    n_ref: float = 1.0
    params: Optional[np.ndarray] = None  # the chosen family's parameters in score space
    draws: list = dataclasses.field(default_factory=list)  # [(Family, params rows (d, k), predictive sd (d,))]
    z: Optional[np.ndarray] = None  # one standard normal per draw: a new cell mean's own noise

    @property
    def sign(self) -> int:
        return 1 if self.higher_is_better else -1

    @property
    def fitted(self) -> bool:
        return self.params is not None

    @property
    def trusted(self) -> bool:
        return self.status in TRUSTED

    @property
    def interval(self) -> bool:
        return bool(self.draws)

    @property
    def budgets(self) -> list[int]:
        return sorted(self.points)

    @property
    def means(self) -> list[float]:
        return [float(np.mean(self.points[n])) for n in self.budgets]

    @property
    def seed_std(self) -> Optional[float]:
        """Pooled sample std over seeds (budgets with ≥ 2 seeds)."""
        vs = [float(np.var(v, ddof=1)) for v in self.points.values() if len(v) > 1]
        return math.sqrt(float(np.mean(vs))) if vs else None

    @property
    def fam(self) -> Family:
        return CONSTANT if self.status == "flat" else FAMILIES[self.family]

    @property
    def a(self) -> Optional[float]:
        """The fitted asymptote in the metric's own direction."""
        return None if not self.fitted else self.sign * float(self.params[0])

    def _clip(self, v):
        return np.clip(v, 0.0, 1.0) if self.bounded else v

    def mean(self, n):
        """The fitted mean metric at n (float for a scalar, array for an array)."""
        if not self.fitted:
            raise ValueError(f"{' · '.join(map(str, self.key))} is not fitted: {self.reason}")
        v = self._clip(self.sign * self.fam.f(np.asarray(n, dtype=float) / self.n_ref, *self.params))
        return float(v) if np.ndim(n) == 0 else v

    def curve_draws(self, n) -> Optional[np.ndarray]:
        """The bootstrap's mean curves at n, metric space: shape n.shape + (draws,); None without an interval."""
        if not self.draws:
            return None
        x = np.asarray(n, dtype=float)[..., None] / self.n_ref
        parts = [fam.f(x, *rows.T) for fam, rows, _ in self.draws]
        return self._clip(self.sign * np.concatenate(parts, axis=-1))

    def predict(self, n):
        """(mean, lo, hi): the fitted mean at n and the 95% interval for a cell's measured mean there (the curve's
        uncertainty, its misfit and the seeds' noise). Floats for a scalar n (lo, hi None without an interval),
        arrays for an array (nan). A curve that is not fitted raises ValueError."""
        mean = self.mean(n)
        draws = self.curve_draws(n)
        if draws is None:
            lo = hi = np.full_like(np.asarray(mean, dtype=float), np.nan)
        else:
            sd = np.concatenate([s for _, _, s in self.draws])
            draws = self._clip(draws + self.sign * sd * self.z)
            lo, hi = np.percentile(draws, [50 * (1 - LEVEL), 50 * (1 + LEVEL)], axis=-1)
        if np.ndim(n) == 0:
            return mean, *(None if np.isnan(v) else float(v) for v in (lo, hi))
        return mean, lo, hi


def _bounds(scores: np.ndarray, bounded: bool) -> tuple[float, float]:
    """Where the asymptote may lie (score space): no worse than the worst point; for metrics in [0, 1] inside
    [0, 1]; otherwise up to 10 spans past the best point."""
    low = float(scores.min())
    span = float(scores.max() - low) or 1.0
    high = (1.0 if scores.max() > 0 else 0.0) if bounded else float(scores.max()) + 10 * span
    return low, max(high, low + 1e-9)


def _fit(fam: Family, x, y, lo, hi, tol: float = 1e-8):
    """Least squares from each of the family's starts; the best parameters or None (the bootstrap's refits:
    _refit_all)."""
    from scipy.optimize import OptimizeWarning, curve_fit  # ~0.5 s: imported when a curve is fitted, not before

    bounds, default = fam.setup(x, y, lo, hi)
    low, high = np.asarray(bounds[0], float), np.asarray(bounds[1], float)
    best, best_sse = None, math.inf
    for p0 in default:
        p0 = np.clip(np.asarray(p0, float), low + 1e-9 * (1 + abs(low)), np.where(np.isinf(high), 1e12, high - 1e-9))
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                p, _ = curve_fit(fam.f, x, y, p0=p0, bounds=(low, high), method="trf", jac=fam.jac, maxfev=2000,
                                 ftol=tol, xtol=tol)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        sse = float(np.sum((fam.f(x, *p) - y) ** 2))
        if math.isfinite(sse) and sse < best_sse:
            best, best_sse = p, sse
    return best


def _arrays(points: dict[int, list[float]], n_ref: float, sign: int):
    x = np.concatenate([[n / n_ref] * len(v) for n, v in points.items()])
    y = sign * np.concatenate([np.asarray(v, float) for v in points.values()])
    return x, y


def _pooled_var(points) -> float:
    vs = [float(np.var(v, ddof=1)) for v in points.values() if len(v) > 1]
    return float(np.mean(vs)) if vs else 0.0


def _aicc(sse: float, n: int, k: int) -> float:
    return n * math.log(max(sse, 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def _leave_last_out(points, n_ref, sign, lo, hi) -> dict[str, float]:
    """Each family fitted on every budget but the largest: its abs error on the largest's mean (score space)."""
    largest = max(points)
    x, y = _arrays({n: v for n, v in points.items() if n != largest}, n_ref, sign)
    held = sign * float(np.mean(points[largest]))
    out = {}
    for name, fam in FAMILIES.items():
        p = _fit(fam, x, y, lo, hi)
        if p is not None:
            out[name] = abs(float(fam.f(largest / n_ref, *p)) - held)
    return out


def _monotone_breaks(points, sign, bounded) -> list[tuple[int, int]]:
    """Consecutive budgets whose mean drops by more than the seeds' noise allows (2 standard errors of the
    difference, and at least 0.01 for metrics in [0, 1], 1% of the mean otherwise)."""
    var = _pooled_var(points)
    ns = sorted(points)
    out = []
    for a, b in zip(ns, ns[1:]):
        ma, mb = sign * np.mean(points[a]), sign * np.mean(points[b])
        floor = 0.01 if bounded else 0.01 * abs(ma)
        if ma - mb > max(2 * math.sqrt(var / len(points[a]) + var / len(points[b])), floor):
            out.append((a, b))
    return out


def _draws(fam: Family, p, x, y, ns, points, lo, hi, count, rng, n_new) -> Optional[tuple]:
    """Parametric bootstrap of one family: each budget's cell mean moved by the misfit (the means' scatter about the
    fit beyond the seeds' noise), each seed by the pooled seed std; refitted from the fit. With the predictive sd of
    a new cell's mean (misfit + seeds / n_new). None when nothing measures the noise (one seed, no spare budget)."""
    var = _pooled_var(points)
    m = np.array([len(points[n]) for n in ns])
    fitted = fam.f(np.asarray(ns, float) / (ns[0]), *p)
    resid = np.array([np.mean(y[x == n / ns[0]]) for n in ns]) - fitted
    spare = len(ns) - fam.k
    tau2 = max(0.0, float(np.sum(resid**2)) / max(spare, 1) - float(np.mean(var / m)))
    if var == 0.0 and spare <= 0:
        return None
    index = {n: i for i, n in enumerate(ns)}
    budget_of_point = np.array([index[int(round(v * ns[0]))] for v in x])
    sims = []
    for _ in range(count):
        shift = rng.normal(0.0, math.sqrt(tau2), len(ns))
        sims.append(fitted[budget_of_point] + shift[budget_of_point] + rng.normal(0.0, math.sqrt(var), len(x)))
    sd = math.sqrt(tau2 + var / n_new)
    return _refit_all(fam, x, y, np.asarray(sims), np.asarray(p, float), lo, hi), np.full(count, sd)


def _refit_all(fam: Family, x, y, sims, p, lo, hi, iterations: int = 100, tol: float = 1e-9) -> np.ndarray:
    """Every simulated data set (a row of `sims`) refitted at once from the fit `p`: Levenberg-Marquardt on all rows
    together (forward-difference Jacobians, each step kept inside the family's bounds, a row's damping adapted to
    whether its step helped). One vectorised pass instead of a solver call per row; the draws need percentiles,
    not the last digits (stopped when no row's relative improvement exceeds `tol`)."""
    (low, high), _ = fam.setup(x, y, lo, hi)
    low, high = np.asarray(low, float), np.asarray(high, float)
    params = np.tile(np.clip(p, low, high), (len(sims), 1))
    k = params.shape[1]

    def residuals(q):
        with np.errstate(all="ignore"):
            return fam.f(x[None, :], *(q[:, j:j + 1] for j in range(k))) - sims

    r = residuals(params)
    sse = np.sum(r**2, axis=1)
    damping = np.full(len(sims), 1e-3)
    eye = np.eye(k)
    for _ in range(iterations):
        h = 1e-7 * (1.0 + np.abs(params))
        jac = np.stack([(residuals(params + h[:, j:j + 1] * eye[j]) - r) / h[:, j:j + 1] for j in range(k)], axis=2)
        grad = np.einsum("mpk,mp->mk", jac, r)
        # a parameter at a bound that the descent direction pushes out of stays there (an active set, as trf's)
        held = ((params <= low) & (grad > 0)) | ((params >= high) & (grad < 0))
        jac = np.where(held[:, None, :], 0.0, jac)
        grad = np.where(held, 0.0, grad)
        normal = np.transpose(jac, (0, 2, 1)) @ jac
        scale = np.diagonal(normal, axis1=1, axis2=2) + 1e-12
        system = normal + damping[:, None, None] * scale[:, :, None] * eye + held[:, :, None] * eye
        with np.errstate(all="ignore"):
            step = -np.linalg.solve(system, grad[:, :, None])[:, :, 0]
        trial = np.clip(params + np.where(np.isfinite(step), step, 0.0), low, high)
        r_trial = residuals(trial)
        sse_trial = np.sum(r_trial**2, axis=1)
        better = np.isfinite(sse_trial) & (sse_trial < sse)
        gain = np.where(better, (sse - sse_trial) / np.maximum(sse, 1e-300), 0.0)
        params[better], r[better], sse[better] = trial[better], r_trial[better], sse_trial[better]
        damping = np.where(better, damping / 3.0, np.minimum(damping * 4.0, 1e12))
        if gain.max() < tol and np.all(better | (damping > 1e6)):
            break
    return params


def _weights(errors: dict[str, float], by_aicc: bool, fitted: dict, var: float, n_new: int) -> dict[str, float]:
    """How the draws are shared among the families: by how well each predicted the held-out budget, on the scale of
    what that prediction could be expected to miss by (a mean's seed noise, twice; at least the best error), or by
    AICc weight; equally when nothing tells them apart. A family one held-out budget cannot rule out keeps a share,
    so an extrapolation carries the families' disagreement; the point prediction is the chosen family's."""
    if not errors:
        return {n: 1.0 / len(fitted) for n in fitted}
    if by_aicc:
        raw = {n: math.exp(-(v - min(errors.values())) / 2) for n, v in errors.items()}
    else:
        scale = max(2 * var / n_new, min(errors.values()) ** 2, 1e-12)
        raw = {n: math.exp(-(e**2 - min(errors.values()) ** 2) / (2 * scale)) for n, e in errors.items()}
    total = sum(raw.values())
    return {n: raw[n] / total for n in raw}


_FITS: dict[tuple, CurveFit] = {}  # the report, its plan and the planner's checks refit the same data: once a process


def fit_curve(key: tuple, rows: list[dict]) -> CurveFit:
    """Fit one curve from its ok records (metric per seed per budget); the same data is fitted once a process."""
    data = (key, tuple((budget_of(r), r["metric"], r.get("cost_usd"), r.get("device_hours"), r.get("metric_name"),
                        r.get("higher_is_better")) for r in rows))
    if data not in _FITS:
        _FITS[data] = _fit_curve(key, rows)
    return _FITS[data]


def _fit_curve(key: tuple, rows: list[dict]) -> CurveFit:
    first = rows[0]
    points: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        points[int(budget_of(r))].append(float(r["metric"]))
    points = dict(sorted(points.items()))
    bounded = all(0.0 <= v <= 1.0 for vs in points.values() for v in vs)
    fit = CurveFit(key, first.get("metric_name") or "metric", bool(first.get("higher_is_better", True)), points,
                   "not fitted", "", bounded=bounded, cost=cost_line([(budget_of(r), r.get("cost_usd")) for r in rows]),
                   hours=cost_line([(budget_of(r), r.get("device_hours")) for r in rows]))
    if len(points) < MIN_BUDGETS:
        fit.reason = f"{len(points)} budget{'s' * (len(points) != 1)}; a fit needs at least {MIN_BUDGETS}"
        return fit
    s, ns = fit.sign, fit.budgets
    fit.n_ref = float(ns[0])
    x, y = _arrays(points, fit.n_ref, s)
    means = s * np.asarray(fit.means)
    lo, hi = _bounds(y, bounded)
    rng = np.random.default_rng(RNG_SEED)
    n_new = int(np.median([len(v) for v in points.values()]))
    # a new cell mean's noise, in units of its sd: Student's t on the pooled seed variance's degrees of freedom
    dof = sum(len(v) - 1 for v in points.values()) or max(len(points) - 3, 1)
    fit.z = rng.standard_t(dof, BOOTSTRAP)
    pooled = math.sqrt(_pooled_var(points))
    spread = float(means.max() - means.min())
    if spread <= max(pooled, 1e-9 * max(1.0, abs(float(means.mean())))):
        # nothing for a curve to explain: the prediction is the mean of the cell means, everywhere
        fit.status, fit.family, fit.choice = "flat", CONSTANT.name, "the cell means vary less than the seeds do"
        fit.reason = (f"cell means span {spread:.4g}, within the seeds' own std ({pooled:.4g}): predicted = the mean"
                      if spread > 1e-12 else "every budget measured the same value: predicted = that value")
        fit.params = np.array([float(means.mean())])
        drawn = _draws(CONSTANT, fit.params, x, y, ns, points, lo - 1.0, hi + 1.0, BOOTSTRAP, rng, n_new) \
            if spread > 1e-12 or pooled > 0 else None
        fit.draws = [(CONSTANT, *drawn)] if drawn else []
        return fit
    breaks = _monotone_breaks(points, s, bounded)
    fitted = {name: p for name, fam in FAMILIES.items() if (p := _fit(fam, x, y, lo, hi)) is not None}
    if not fitted:
        fit.reason = "the least-squares fit did not converge for any curve family"
        return fit
    sses = {n: float(np.sum((FAMILIES[n].f(x, *p) - y) ** 2)) for n, p in fitted.items()}
    if len(ns) >= OK_BUDGETS:
        fit.errors = {n: e for n, e in _leave_last_out(points, fit.n_ref, s, lo, hi).items() if n in fitted}
        # rounded: a tie in the last bits (which differ across CPUs) goes to the registry's order, not to noise
        fit.family = min(fit.errors, key=lambda n: round(fit.errors[n], 9)) if fit.errors else DEFAULT
        fit.choice = f"the smallest error predicting {ns[-1]:,} from the smaller budgets"
    elif len(x) > max(FAMILIES[n].k for n in fitted) + 1:
        fit.errors = {n: _aicc(v, len(x), FAMILIES[n].k) for n, v in sses.items()}
        fit.family = min(fit.errors, key=lambda n: round(fit.errors[n], 6))
        fit.choice = "AICc on every seed's point (too few budgets to hold one out)"
    else:
        fit.family = DEFAULT if DEFAULT in fitted else next(iter(fitted))
        fit.choice = "the default (too few points to tell the families apart)"
    fit.family = fit.family if fit.family in fitted else next(iter(fitted))
    fit.params = fitted[fit.family]
    pred = FAMILIES[fit.family].f(np.asarray(ns) / fit.n_ref, *fit.params)
    fit.r2 = float(1 - np.sum((means - pred) ** 2) / np.sum((means - means.mean()) ** 2))
    weights = _weights(fit.errors, fit.choice.startswith("AICc"), fitted, pooled**2, n_new)
    counts = {n: int(round(BOOTSTRAP * w)) for n, w in weights.items()}
    counts[fit.family] += BOOTSTRAP - sum(counts.values())
    for name, count in counts.items():
        if count > 0 and (drawn := _draws(FAMILIES[name], fitted[name], x, y, ns, points, lo, hi, count, rng,
                                          n_new)):
            fit.draws.append((FAMILIES[name], *drawn))
    if fit.draws and sum(len(r) for _, r, _ in fit.draws) != BOOTSTRAP:
        fit.draws = []  # a family without noise to draw from: no mixture of unequal weight, no interval
    notes = []
    if breaks:
        fit.status = "ill-behaved"
        notes.append("not monotone: the mean drops beyond the seeds' noise from "
                     + ", ".join(f"{a:,} to {b:,}" for a, b in breaks) + "; predictions are shown, not trusted")
    elif fit.r2 < R2_MIN:
        fit.status = "poor fit"
        notes.append(f"R² {fit.r2:.3f} < {R2_MIN}: no family describes these means; predictions are shown, not trusted")
    elif len(ns) < OK_BUDGETS:
        fit.status = "few budgets"
        notes.append(f"{len(ns)} budgets: any {FAMILIES[fit.family].k}-parameter curve fits them; predictions are "
                     f"shown, not trusted (ok needs {OK_BUDGETS}+)")
    else:
        fit.status = "ok"
        notes.append(f"R² {fit.r2:.3f}")
    if float(pred[-1] - pred[0]) < 1e-6:
        notes.append("the best fit is a constant: no gain with more data")
    if not fit.draws:
        notes.append("one seed per budget and no budget to spare: no interval")
    fit.reason = "; ".join(notes)
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


def fit_curves(records: list[dict]) -> dict[tuple, CurveFit]:
    """Every curve of the records, fitted or with the reason it is not: (task, dataset, model, mode) -> CurveFit."""
    return {key: fit_curve(key, rows) for key, rows in by_curve(records).items()}


def limit(fit: CurveFit, max_factor: float) -> float:
    return max_factor * max(fit.points)
