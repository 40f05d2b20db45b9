"""How two leaderboard cells (mean ± std over seeds) compare: 'best', 'within one std', the Welch interval of a
difference and whether it is significant. One definition shared by the cells, the verdicts and the headline, so
they never disagree about what counts as a win."""
from __future__ import annotations

import math
from typing import Optional

EPS = 1e-12  # "within one std" must not flip on float noise (0.93 - 0.90 > 0.03 in binary)


def sign(cell: dict) -> int:
    return 1 if cell["higher_is_better"] else -1


def best(cells: list[dict]) -> Optional[dict]:
    scored = [c for c in cells if c["n"]]
    return max(scored, key=lambda c: sign(c) * c["metric_mean"]) if scored else None


def within_std(cell: dict, best: dict) -> bool:
    """`cell` trails `best` by at most best's std over seeds (n=1: no spread, so only a tie qualifies)."""
    return sign(best) * (best["metric_mean"] - cell["metric_mean"]) <= (best["metric_std"] or 0.0) + EPS


def welch_interval(a: dict, b: dict, level: float = 0.95) -> Optional[tuple[float, float]]:
    """Interval for mean(a) - mean(b) over seeds (Welch's t, unequal variances); None when a side has one seed.
    The cells hold mean, std and n, not the seeds' values, and scipy's summary-statistics test
    (ttest_ind_from_stats) returns neither its degrees of freedom nor an interval: the Welch-Satterthwaite degrees
    of freedom are computed here, the interval is scipy.stats.t's."""
    from scipy.stats import t

    if a["n"] < 2 or b["n"] < 2:
        return None
    va, vb = a["metric_std"] ** 2 / a["n"], b["metric_std"] ** 2 / b["n"]
    diff, se = a["metric_mean"] - b["metric_mean"], math.sqrt(va + vb)
    if se == 0:  # identical seeds on both sides: no spread to widen the interval (scipy wants a scale > 0)
        return diff, diff
    dof = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    low, high = t.interval(level, dof, loc=diff, scale=se)
    return float(low), float(high)


def significant(interval: Optional[tuple[float, float]]) -> Optional[bool]:
    """The interval excludes 0; None without an interval (one seed)."""
    return None if interval is None else not (interval[0] <= 0 <= interval[1])
