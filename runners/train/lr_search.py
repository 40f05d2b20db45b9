"""The learning-rate search behind `lr: auto` and `lr: [grid]`: one per run, on the HF loop.

The rule (the same for every mode, documented in docs/learning-rates.md): each candidate rate trains the run's own recipe --
the same initialisation (seed), training examples, batch, shuffling and schedule shape -- and is scored on
validation examples that never include the test split. By default (`lr_search.validation: budget`) the candidates
train on the budget's fit part and are scored on its validation part (runners/train/plateau.py's split), so the
budget counts every label used; `validation: beyond` scores on `validation_samples` examples of the training pool
held out beyond the budget instead. Under `schedule: plateau` each candidate trains to its own plateau; under a
fixed schedule, for `lr_search.fraction` of the run's optimizer steps (at least `min_steps`, at most all of them),
its warm-up and decay compressed. The best validation metric wins; candidates within half a validation example of
it are tied, and a tie goes to the mode's default rate, else to the rate nearest the grid's centre; a diverged
candidate loses. When `lr: auto`'s best rate is an end of its grid and wins outright, the search goes on past that
end a half-decade at a time (at most EXTEND more rates), so the grid's range does not decide alone; a grid the
suite gives is searched as given. The record says whether any candidate beat chance. The run then trains at the
chosen rate exactly as a run given that rate does.

What it costs is part of what the mode costs a user: the search's seconds are in the run's wall time, device-hours
and dollar cost (and `lr_search.seconds`), not in its train/eval seconds, samples/s or time-to-target, which
describe the training the user keeps.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

from transferbench.errors import UserError
from transferbench.outcome import Diverged

from ..signals import check_stop

ONLY_FINAL_EVAL = 1e6  # eval_every in epochs: a candidate is evaluated once, when it ends


def check_pool(plan, size: int, pool: int) -> None:
    """A search that scores beyond the budget (`lr_search.validation: beyond`) needs that many training examples
    left in the pool after the budget's `size`: refused before anything trains, not after other runs trained."""
    extra = plan.rule.validation_samples if plan.rule.validation == "beyond" else 0
    if extra and pool - size < extra:
        raise UserError(f"lr: {'auto' if plan.kind == 'auto' else 'a grid'} scores its candidate rates on {extra} "
                        f"training examples beyond the budget, and only {max(pool - size, 0)} of the {pool} are left "
                        f"after {size}: set lr_search.validation_samples lower, use lr_search.validation: budget, "
                        f"or give lr")


def candidate_steps(total_steps: int, rule) -> int:
    return min(total_steps, max(math.ceil(rule.fraction * total_steps), rule.min_steps))


def candidate(spec, lr: float, steps: int):
    """`spec` as one candidate trains it: rate `lr` for `steps` optimizer steps, one evaluation at the end, no
    target, early stopping or trackers (its scores go in the run's record, not a tracker run of their own)."""
    hyper = spec.hyper.model_copy(update={"lr": lr, "max_steps": steps, "eval_every": ONLY_FINAL_EVAL,
                                          "early_stopping": None, "report_to": ()})
    return spec.model_copy(update={"hyper": hyper, "target": None})


def chosen(spec, lr: float):
    """The run at the chosen rate (its run_id stays the searched run's: the record keeps spec's)."""
    return spec.model_copy(update={"hyper": spec.hyper.model_copy(update={"lr": lr})})


def search(spec, plan, total_steps: int, train_candidate: Callable, metric_name: str, higher_is_better: bool,
           validation_samples: int, chance: Optional[float] = None) -> tuple[float, dict, float]:
    """(the chosen rate, the record's `lr_search`, seconds of shared work to charge): every candidate trained by
    `train_candidate(candidate spec)`, which returns its outcome scored on the validation examples (under a plateau
    schedule, its best scoring). `chance`: the metric a constant guess gets, to record whether any candidate beat
    it by more than one validation example."""
    t0 = time.perf_counter()
    grid, kind = plan.grid, plan.kind  # an LrSearchPlan (runners/orchestrate/plan.py)
    to_plateau = spec.hyper.schedule == "plateau"
    steps = total_steps if to_plateau else candidate_steps(total_steps, plan.rule)
    scores, charged = [], 0.0
    tie = 0.5 / validation_samples  # half an example: metrics closer than that are the same count of examples

    def score(lr: float) -> None:
        nonlocal charged
        check_stop()
        try:
            out = train_candidate(candidate(spec, lr, steps))
        except Diverged:
            scores.append({"lr": lr, "metric": None, "loss": None, "diverged": True})
            return
        charged += out.charged_seconds
        scores.append({"lr": lr, "metric": out.metrics.get(metric_name), "loss": out.metrics.get("loss")})

    for lr in grid:
        score(lr)
    best, outright = _best(scores, higher_is_better, grid, tie, plan.default)
    # an auto grid whose end wins outright extends past that end, a half-decade at a time; a tie never does
    for _ in range(EXTEND):
        tried = sorted(s["lr"] for s in scores)
        if kind != "auto" or not outright or best["lr"] not in (tried[0], tried[-1]):
            break
        score(half_decade(best["lr"], up=best["lr"] == tried[-1]))
        best, outright = _best(scores, higher_is_better, grid, tie, plan.default)
    beat = None if chance is None or not higher_is_better else best["metric"] > chance + 1 / validation_samples
    return best["lr"], {"kind": kind, "grid": list(grid), "scores": scores, "chosen": best["lr"],
                        "steps": "plateau" if to_plateau else steps, "validation": plan.rule.validation,
                        "validation_samples": validation_samples, "outright": outright, "beat_chance": beat,
                        "seconds": round(time.perf_counter() - t0, 3)}, charged


EXTEND = 2  # at most this many rates beyond an auto grid's end


def half_decade(lr: float, up: bool) -> float:
    """The next rate of the 1, 3, 10, 30 ... ladder above (or below) `lr`."""
    k = round(2 * math.log10(lr)) + (1 if up else -1)
    return float(f"{10 ** (k / 2):.1g}")


def _best(scores: list[dict], higher_is_better: bool, grid, tie: float, default: Optional[float]) -> tuple[dict, bool]:
    """(the winner, whether it won outright). The best validation metric wins; candidates within `tie` of it are
    tied, and a tie goes to the mode's default rate, else to the rate nearest the grid's centre (in log scale; a
    lower validation loss decides between two equally near). Diverged candidates never win."""
    sign = 1 if higher_is_better else -1
    finite = [s for s in scores if s["metric"] is not None and math.isfinite(s["metric"])]
    if not finite:
        raise Diverged(f"every candidate learning rate of the search diverged ({', '.join(f'{x:g}' for x in grid)}); "
                       f"give lower rates")
    top = max(sign * s["metric"] for s in finite)
    tied = [s for s in finite if sign * s["metric"] >= top - tie]
    if len(tied) == 1:
        return tied[0], True
    centre = (math.log10(min(grid)) + math.log10(max(grid))) / 2
    loss = lambda s: s["loss"] if s["loss"] is not None else math.inf  # noqa: E731
    return min(tied, key=lambda s: (s["lr"] != default, abs(math.log10(s["lr"]) - centre), loss(s))), False
