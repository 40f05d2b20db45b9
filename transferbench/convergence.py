"""Had a run stopped improving when it ended? A cell whose runs were still improving measures a schedule that
was too short, not the mode: verdicts built on it are provisional.

Two rules, the first that applies:
- evaluations: with at least 2 points on the eval curve, the run is still improving when its last evaluation
  beat the one before by more than EVAL_TOLERANCE (in the metric's own units, e.g. 0.01 accuracy);
- training loss: otherwise, with at least MIN_STEPS optimizer steps, the run is still improving when the mean
  loss of its last quarter of steps is more than LOSS_TOLERANCE (relative) below that of the quarter before.
Runs with fewer steps are "too short to tell" (converged = None).
"""
from __future__ import annotations

from statistics import fmean
from typing import Optional

EVAL_TOLERANCE = 0.01
LOSS_TOLERANCE = 0.10
MIN_STEPS = 8


def judge(curve: list[dict], losses: list[float], higher_is_better: bool,
          stop_reason: Optional[str] = None) -> tuple[Optional[bool], str]:
    """(converged, why) from the eval curve ({metric} points in order) and the per-step training losses."""
    if stop_reason == "early_stopping":
        return True, "stopped early: the validation subset's metric had stopped improving"
    if stop_reason == "plateau":
        return True, "trained to its plateau: the budget's validation part had stopped improving"
    if stop_reason == "cap":
        return False, "hit the step cap while the budget's validation part was still improving"
    if len(curve) >= 2:
        gain = curve[-1]["metric"] - curve[-2]["metric"]
        gain = gain if higher_is_better else -gain
        verdict = gain <= EVAL_TOLERANCE
        return verdict, (f"last evaluation {gain:+.4f} over the previous "
                         f"({'within' if verdict else 'above'} the tolerance {EVAL_TOLERANCE:g})")
    if len(losses) < MIN_STEPS:
        return None, f"{len(losses)} optimizer steps: too short to tell"
    q = len(losses) // 4
    before, last = fmean(losses[-2 * q:-q]), fmean(losses[-q:])
    drop = (before - last) / abs(before) if before else 0.0
    verdict = drop <= LOSS_TOLERANCE
    return verdict, (f"training loss {-drop:+.0%} over the last quarter of steps "
                     f"({'within' if verdict else 'beyond'} the tolerance {LOSS_TOLERANCE:.0%})")
