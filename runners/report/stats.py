"""How leaderboard cells (mean ± std over seeds) compare: the best cell, the Welch interval and p-value of a
difference (scipy.stats.ttest_ind on the seeds' values), whether a lead over every other mode is significant
(Holm–Bonferroni), the equivalence margin that decides "adequate" (tied with the best), and whether a cell's runs had
settled. One definition shared by the cells, the verdicts and the headline, so they never disagree about what counts
as a win or a tie. scipy has no bootstrap to replace here: the planner's bootstraps (planner.py) are not this
module's."""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import numpy as np

EPS = 1e-12  # comparisons of means must not flip on float noise (0.93 - 0.90 > 0.03 in binary)
ALPHA = 0.05  # family-wise level of a "wins" claim (over the leader's k-1 comparisons)
TOLERANCE = 0.01  # the equivalence margin's floor, in the metric's units for metrics in [0, 1]
RELATIVE_TOLERANCE = 0.01  # for metrics outside [0, 1] (a loss, a perplexity): 1% of the best mean

RULES = ('a mode "wins" at a budget when its lead over every other mode evaluated at that budget is significant: '
         f"one Welch t-test over seeds per other mode (k−1 tests), each Holm–Bonferroni-adjusted p ≤ {ALPHA:g} "
         "(the family-wise level of the claim); otherwise it is \"ahead\", and the line names the closest mode whose "
         'lead is not significant. "Adequate" (tied with the best): a mean that trails the best by at most the '
         f"margin, max(one evaluation example = 1 / the eval examples, {TOLERANCE:g}) for metrics in [0, 1], "
         f"{RELATIVE_TOLERANCE:.0%} of the best mean otherwise; a std over seeds decides neither. The cheapest "
         "adequate mode is the cheapest per run (cost, else device-hours) among them, shown with its gap to the best "
         "and the gap's 95% Welch interval.")


def sign(cell: dict) -> int:
    return 1 if cell["higher_is_better"] else -1


def best(cells: list[dict]) -> Optional[dict]:
    scored = [c for c in cells if c["n"]]
    return max(scored, key=lambda c: sign(c) * c["metric_mean"]) if scored else None


def _seeds(cell: dict) -> Optional[list[float]]:
    """The cell's metric per evaluated seed; None when it has fewer than two (no spread to test with)."""
    values = cell.get("metric_values") or ()
    return list(values) if len(values) >= 2 else None


def _welch(a: dict, b: dict):
    """scipy's Welch t-test (ttest_ind, equal_var=False) of the two cells' seeds, or (None, None) when a side has
    one seed, or (difference, None) when neither side has any spread (scipy's t is undefined there: the seeds agree
    exactly, so the difference is systematic)."""
    xa, xb = _seeds(a), _seeds(b)
    if xa is None or xb is None:
        return None, None
    return _welch_test(tuple(xa), tuple(xb))


@functools.lru_cache(maxsize=4096)  # a pair is tested for its interval, its p-value, the verdict and the decision
def _welch_test(xa: tuple, xb: tuple):
    from scipy.stats import ttest_ind

    if np.ptp(xa) == 0 and np.ptp(xb) == 0:
        return float(np.mean(xa) - np.mean(xb)), None
    with warnings.catch_warnings():  # one side's seeds all equal: scipy warns of precision loss in its variance
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)  # (0 exactly; the interval is exact)
        return None, ttest_ind(xa, xb, equal_var=False)


def welch_interval(a: dict, b: dict, level: float = 0.95) -> Optional[tuple[float, float]]:
    """Interval for mean(a) - mean(b) over seeds: scipy.stats.ttest_ind(equal_var=False).confidence_interval
    (Welch's t, Welch–Satterthwaite degrees of freedom); None when a side has one seed."""
    diff, test = _welch(a, b)
    if test is None:
        return None if diff is None else (diff, diff)
    ci = test.confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high)


def welch_p(a: dict, b: dict) -> Optional[float]:
    """Two-sided p-value of Welch's t-test of mean(a) = mean(b) (scipy's ttest_ind); None with one seed."""
    diff, test = _welch(a, b)
    if test is None:
        return None if diff is None else (0.0 if abs(diff) > EPS else 1.0)
    return float(test.pvalue)


def significant(interval: Optional[tuple[float, float]]) -> Optional[bool]:
    """The interval excludes 0; None without an interval (one seed)."""
    return None if interval is None else not (interval[0] <= 0 <= interval[1])


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values (scipy has no Holm; statsmodels' multipletests is not a
    dependency): sorted ascending, the i-th (0-based) of m is multiplied by m - i, then made monotone."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out.tolist()


def lead(leader: dict, others: list[dict]) -> tuple[str, list[dict]]:
    """The leader's standing against every other scored cell: (state, comparisons). Each comparison: mode, diff
    (leader - other, in the metric's direction: >= 0), 95% Welch interval, p, Holm-adjusted p, significant; closest
    first. state: 'wins' (every comparison significant), 'ahead' (some is not), 'one seed' (no test is possible for
    some mode and the others are significant), 'only' (nothing to compare)."""
    rows = []
    for o in sorted((o for o in others if o["n"]), key=lambda o: sign(leader) * (leader["metric_mean"] -
                                                                                 o["metric_mean"])):
        interval = welch_interval(leader, o)
        if interval is not None and sign(leader) < 0:
            interval = (-interval[1], -interval[0])
        rows.append(dict(mode=o["mode"], diff=sign(leader) * (leader["metric_mean"] - o["metric_mean"]),
                         ci=interval, p=welch_p(leader, o), p_holm=None, significant=None))
    tested = [r for r in rows if r["p"] is not None]
    for r, adjusted in zip(tested, holm([r["p"] for r in tested]) if tested else []):
        r["p_holm"], r["significant"] = adjusted, adjusted <= ALPHA and r["diff"] > EPS
    if not rows:
        return "only", rows
    if all(r["significant"] for r in rows):
        return "wins", rows
    return ("ahead" if any(r["significant"] is False for r in rows) else "one seed"), rows


def closest_unproven(rows: list[dict]) -> Optional[dict]:
    """The closest mode whose lead is not significant (or cannot be tested: one seed)."""
    return next((r for r in rows if r["significant"] is False), None) or next(
        (r for r in rows if r["significant"] is None), None)


def margin(cells: list[dict]) -> float:
    """The equivalence margin of one budget's cells: max(1 / eval examples, TOLERANCE) for metrics in [0, 1],
    RELATIVE_TOLERANCE × |best mean| otherwise."""
    scored = [c for c in cells if c["n"]]
    top = best(scored)
    if not all(0.0 <= c["metric_mean"] <= 1.0 for c in scored):
        return RELATIVE_TOLERANCE * abs(top["metric_mean"])
    counts = [c["eval_samples"] for c in scored if c.get("eval_samples")]
    return max(TOLERANCE, 1.0 / min(counts)) if counts else TOLERANCE


def gap(cell: dict, top: dict) -> tuple[float, Optional[tuple[float, float]]]:
    """mean(cell) - mean(best) with its 95% Welch interval (None with one seed)."""
    return cell["metric_mean"] - top["metric_mean"], welch_interval(cell, top)


def adequate(cell: dict, top: dict, tolerance: float) -> bool:
    """`cell` trails `top` by at most the margin."""
    return sign(top) * (top["metric_mean"] - cell["metric_mean"]) <= tolerance + EPS


def unsettled(cell: dict) -> bool:
    """Some run of the cell was still improving, or too short to tell: what rests on it is provisional."""
    return bool(cell.get("still_improving") or cell.get("too_short"))
