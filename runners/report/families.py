"""Learning-curve families: the shapes a curve may be fitted with, one registry. Each is written in score space
(higher is better) on x = n / n_ref (n_ref: the curve's smallest budget) as y = A − B·g(x), g decreasing, A the
asymptote, so every family answers the same questions (asymptote, inversion) the same way. The planner fits each
family and keeps the one that predicts a held-out budget best (curves.py)."""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from transferbench.errors import check_unique


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    formula: str  # as printed in plan.md (lower is better: the same with the signs flipped)
    f: Callable  # f(x, *params) -> y
    jac: Callable  # jac(x, *params) -> (len(x), k): analytic, half the evaluations of finite differences
    k: int  # parameters
    # (x, y, lo, hi) -> bounds ([lows], [highs]) and starting points [params]; lo..hi: where the asymptote may lie
    setup: Callable

    def asymptote(self, params) -> float:
        return float(params[0])


def _pow3(x, A, B, C):
    return A - B * np.power(x, -C)


def _exp3(x, A, B, C):
    return A - B * np.exp(-C * (x - 1.0))


def _pow3_jac(x, A, B, C):
    t = np.power(x, -C)
    return np.column_stack([np.ones_like(x), -t, B * t * np.log(x)])


def _exp3_jac(x, A, B, C):
    e = np.exp(-C * (x - 1.0))
    return np.column_stack([np.ones_like(x), -e, B * (x - 1.0) * e])


def _log4(x, A, B, C, M):
    # logistic in log n (LCDB's MMF): flat near A − B well below n_ref·e^M, then up to A; C the slope
    return A - B / (1.0 + np.exp(np.clip(C * (np.log(x) - M), -60.0, 60.0)))


def _log4_jac(x, A, B, C, M):
    s = 1.0 / (1.0 + np.exp(np.clip(C * (np.log(x) - M), -60.0, 60.0)))
    slope = B * s * (1.0 - s)
    return np.column_stack([np.ones_like(x), -s, slope * (np.log(x) - M), -slope * C])


def _span(y):
    top, low = float(np.max(y)), float(np.min(y))
    return top, low, (top - low) or 1e-3


def _pow3_setup(x, y, lo, hi):
    top, low, span = _span(y)
    starts = [(top + k * span, top + k * span - low, c) for k in (0.1, 0.5, 2.0) for c in (0.2, 0.5, 1.0)]
    return ([lo, 0.0, 0.01], [hi, np.inf, 3.0]), starts


def _exp3_setup(x, y, lo, hi):
    top, low, span = _span(y)
    width = max(float(np.max(x)) - 1.0, 1.0)
    starts = [(top + k * span, top + k * span - low, r / width) for k in (0.05, 0.5) for r in (0.5, 2.0, 5.0)]
    return ([lo, 0.0, 1e-4 / width], [hi, np.inf, 50.0]), starts


def _log4_setup(x, y, lo, hi):
    top, low, span = _span(y)
    end = math.log(float(np.max(x)))
    starts = [(top + k * span, top + k * span - low + span * 0.5, c, m * end)
              for k in (0.05, 0.5) for c in (1.0, 3.0) for m in (0.25, 0.75)]
    return ([lo, 0.0, 0.2, -3.0], [hi, (hi - lo) + 2 * span, 10.0, end + 6.0]), starts


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    check_unique("curve family", family.name, FAMILIES, family)
    FAMILIES[family.name] = family
    return family


register(Family("power law", "a − b·n^(−c)", _pow3, _pow3_jac, 3, _pow3_setup))
register(Family("exponential", "a − b·e^(−c·(n/n₀ − 1))", _exp3, _exp3_jac, 3, _exp3_setup))
register(Family("logistic in log n", "a − b / (1 + (n/m)^c)", _log4, _log4_jac, 4, _log4_setup))
DEFAULT = "power law"  # the choice when nothing tells the families apart (too few points for a criterion)
