"""`schedule: plateau`: each mode trained to its validation plateau, with validation taken from inside the budget.

The rule (transferbench/hyper.py, Plateau): the budget's examples are split by the run's seed into a fit part and a
validation part; the run trains on the fit part and scores the validation part every `eval_steps` optimizer steps
until the metric stops improving (`patience` scorings without a gain above `min_delta`), never before the floor
`min_steps`, at most the cap `max_steps`; the best scoring is the first to reach the best metric. The best
scoring's step, counted in epochs of the fit part, becomes the step count of the final run, which trains anew on
the whole budget (VTAB's protocol: choose on 80/20, retrain on all) and is scored once on the test subset. The
search and the plateau phase are part of what the mode costs: their seconds are charged to the run's wall time
and cost, not to its train/eval seconds.
"""
from __future__ import annotations

import math
from typing import Optional

from transferbench import sources
from transferbench.errors import UserError

def validation_size(n: int, rule) -> int:
    """How many of a budget's `n` examples validate (at least `min_validation`, at least one left to fit)."""
    return max(rule.min_validation, math.ceil(rule.validation * n))


def check_budget(n: int, rule, who: str = "schedule: plateau") -> None:
    """A budget too small to split is refused before anything trains. `who` splits it: the plateau phase, or a
    learning-rate search that validates inside the budget (it uses the same split)."""
    k = validation_size(n, rule)
    if n - k < 2:
        fix = "or schedule: fixed" if who.startswith("schedule") else "or give lr (no search)"
        raise UserError(f"{who} validates on {k} of the budget's {n} examples and needs at least 2 left to fit: use "
                        f"a larger budget, lower plateau.min_validation, {fix}")


def split(train_set, rule, seed: int):
    """(fit, validation): subsets of the budget's examples, disjoint, drawn by the run's seed."""
    import torch  # here, not at import: preflight checks budgets torch-free

    n = len(train_set)
    check_budget(n, rule)
    order = sources.subset_indices(n, seed, n)
    k = validation_size(n, rule)
    pick = lambda positions: torch.utils.data.Subset(  # noqa: E731 - indices into the budget's own dataset
        train_set.dataset, [train_set.indices[i] for i in sorted(positions)])
    return pick(order[k:]), pick(order[:k])


class Watch:
    """The plateau phase's stopping rule, fed one validation scoring at a time."""

    def __init__(self, rule, higher_is_better: bool):
        self.rule, self.sign = rule, 1 if higher_is_better else -1
        self.best: Optional[dict] = None
        self.waited = 0
        self.history: list[dict] = []  # every scoring: {step, metric, loss}

    def update(self, step: int, metric: float, loss: Optional[float]) -> bool:
        """Record a scoring; True when the run should stop (patience spent, floor passed)."""
        self.history.append({"step": step, "metric": metric, "loss": loss})
        gain = None if self.best is None else self.sign * (metric - self.best["metric"])
        if gain is None or gain > self.rule.min_delta:  # the metric alone: a loss still falling on a validation
            # part it already classifies right would never let the run reach its plateau
            self.best, self.waited = {"step": step, "metric": metric, "loss": loss}, 0
        else:
            self.waited += 1
        return self.waited >= self.rule.patience and step >= self.rule.min_steps


def final_steps(best_step: int, fit_batches: int, all_batches: int) -> int:
    """The final run's optimizer steps: as many epochs of the whole budget as the best scoring had of the fit part."""
    return max(1, round(best_step * max(1, all_batches) / max(1, fit_batches)))


def summary(watch: Watch, stop_reason: str, fit: int, validation: int, steps_run: int, final: int,
            seconds: float) -> dict:
    """What the record keeps of the plateau phase (`plateau` field)."""
    return {"fit_samples": fit, "validation_samples": validation, "best_step": watch.best["step"],
            "best_metric": watch.best["metric"], "steps_run": steps_run, "final_steps": final,
            "stopped": "plateau" if stop_reason == "plateau" else "cap", "scorings": len(watch.history),
            "cap": watch.rule.max_steps, "floor": watch.rule.min_steps, "seconds": round(seconds, 3),
            "curve": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in p.items()} for p in watch.history]}
