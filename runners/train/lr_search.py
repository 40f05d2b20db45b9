"""The learning-rate search behind `lr: auto` and `lr: [grid]`: once per cell (its first seed; `per: run`: every
run), on the HF loop.

The rule (the same for every mode, documented in docs/learning-rates.md): each candidate rate trains the run's own
recipe -- the same initialisation (seed), training examples, batch, shuffling and schedule shape -- and is scored on
validation examples that never include the test split. By default (`lr_search.validation: budget`) the candidates
train on the budget's fit part and are scored on its validation part (runners/train/plateau.py's split), so the
budget counts every label used; `validation: beyond` scores on `validation_samples` examples of the training pool
held out beyond the budget instead. Under `schedule: plateau` each candidate trains to its own plateau; under a
fixed schedule, for `lr_search.fraction` of the run's optimizer steps (at least `min_steps`, at most all of them),
its warm-up and decay compressed, by successive halving: every candidate first trains a rung, the first
1/`halving` of those steps on that schedule (at least `min_rung_steps`; no rung when that is not shorter), an auto
grid whose rung leader is an end extending past it at that length (EXTEND rates at most), and the 1/`halving` of the
grid's size most promising (by validation metric, then validation loss) then go on from their rung to all of them
(the loop keeps them in memory meanwhile, as runners/train/midrun.Paused); only candidates that trained all of them
can win. The best validation metric wins; candidates
within half a validation example of it are tied, and a tie goes to the mode's default rate, else to the rate
nearest the grid's centre; a diverged candidate loses. When `lr: auto`'s best rate is an end of its grid and wins
outright, the search goes on past that end a half-decade at a time (at most EXTEND more rates, each trained all the
steps), so the grid's range does not decide alone; a grid the suite gives is searched as given. The record says
whether any candidate beat chance. The run then trains at the chosen rate exactly as a run given that rate does.

What it costs is part of what the mode costs a user: the search's seconds are in the wall time, device-hours and
dollar cost of the run that searched (a cell's other seeds reuse its choice and record whose it was: a cell's mean
cost carries the search once, shared by its seeds), not in train/eval seconds, samples/s or time-to-target, which
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


def rungs(steps: int, rule) -> list[int]:
    """Successive halving's candidate lengths: [a first rung, `steps`], or [`steps`] when a rung would not be shorter."""
    first = max(rule.min_rung_steps, math.ceil(steps / rule.halving))
    return [first, steps] if rule.halving > 1 and first < steps else [steps]


def search(spec, plan, total_steps: int, train_candidate: Callable, metric_name: str, higher_is_better: bool,
           validation_samples: int, chance: Optional[float] = None) -> tuple[float, dict, float]:
    """(the chosen rate, the record's `lr_search`, seconds of shared work to charge): every candidate trained by
    `train_candidate(candidate spec)`, which returns its outcome scored on the validation examples (under a plateau
    schedule, its best scoring); a first rung's candidate by `train_candidate(spec, until=k, forget=rates)`: only
    its first k steps, kept to go on from when the same candidate is trained again (the kept ones of `rates` are no
    longer needed). `chance`: the metric a constant guess gets, to record whether any candidate beat
    it by more than one validation example."""
    t0 = time.perf_counter()
    grid, kind = plan.grid, plan.kind  # an LrSearchPlan (runners/orchestrate/plan.py)
    to_plateau = spec.hyper.schedule == "plateau"
    steps = total_steps if to_plateau else candidate_steps(total_steps, plan.rule)
    lengths = [steps] if to_plateau else rungs(steps, plan.rule)
    scores, charged = [], 0.0
    tie = 0.5 / validation_samples  # half an example: metrics closer than that are the same count of examples

    keep = max(1, math.ceil(len(grid) / plan.rule.halving))  # promoted from the first rung

    def score(lr: float, length: int) -> dict:
        nonlocal charged
        check_stop()
        t = time.perf_counter()
        rung = {} if length == steps else {  # a first rung: the candidate's first steps, kept to go on from
            "until": length, "forget": [s["lr"] for s in _by_progress(scores, higher_is_better, tie)[keep:]]}
        try:
            out = train_candidate(candidate(spec, lr, steps), **rung)
        except Diverged:
            scores.append({"lr": lr, "steps": length, "metric": None, "loss": None, "diverged": True,
                           "seconds": round(time.perf_counter() - t, 3)})
            return scores[-1]
        charged += out.charged_seconds
        scores.append({"lr": lr, "steps": length, "metric": out.metrics.get(metric_name), "loss": out.metrics.get("loss"),
                       "seconds": round(time.perf_counter() - t, 3), "train_seconds": round(out.train_seconds, 3),
                       **({"from_step": out.resumed_at_step} if out.resumed_at_step else {})})
        return scores[-1]

    entrants = list(grid)
    for length in lengths[:-1]:  # successive halving's first rung: promoted by metric, then validation loss
        rung = [score(lr, length) for lr in entrants]
        rung += _beyond_leader(rung, kind, lambda lr: score(lr, length), higher_is_better, tie)
        entrants = [s["lr"] for s in _by_progress(rung, higher_is_better, tie)[:keep]]
    for lr in entrants:
        score(lr, steps)
    final = lambda: [s for s in scores if s["steps"] == steps]  # noqa: E731 - only these can win
    best, outright = _best(final(), higher_is_better, grid, tie, plan.default)
    # an auto grid whose end wins outright extends past that end, a half-decade at a time; a tie never does
    for _ in range(EXTEND):
        tried = sorted(s["lr"] for s in scores)
        if kind != "auto" or not outright or best["lr"] not in (tried[0], tried[-1]):
            break
        score(half_decade(best["lr"], up=best["lr"] == tried[-1]), steps)
        best, outright = _best(final(), higher_is_better, grid, tie, plan.default)
    beat = None if chance is None or not higher_is_better else best["metric"] > chance + 1 / validation_samples
    return best["lr"], {"kind": kind, "grid": list(grid), "scores": scores, "chosen": best["lr"],
                        "steps": "plateau" if to_plateau else steps, "rungs": lengths, "per": plan.rule.per,
                        "validation": plan.rule.validation, "validation_samples": validation_samples,
                        "outright": outright, "beat_chance": beat, "seconds": round(time.perf_counter() - t0, 3)}, charged


EXTEND = 2  # at most this many rates beyond an auto grid's end


def half_decade(lr: float, up: bool) -> float:
    """The next rate of the 1, 3, 10, 30 ... ladder above (or below) `lr`."""
    k = round(2 * math.log10(lr)) + (1 if up else -1)
    return float(f"{10 ** (k / 2):.1g}")


def _tiers(scores: list[dict], higher_is_better: bool, tie: float, within: Callable) -> list[dict]:
    """The finite candidates, best first: by validation metric, and among those within `tie` of one another's best
    by the key `within`."""
    sign = 1 if higher_is_better else -1
    left = [s for s in scores if s["metric"] is not None and math.isfinite(s["metric"])]
    order = []
    while left:
        top = max(sign * s["metric"] for s in left)
        tied = sorted((s for s in left if sign * s["metric"] >= top - tie), key=within)
        order += tied
        left = [s for s in left if s not in tied]
    return order


def _loss(s: dict) -> float:
    return s["loss"] if s["loss"] is not None and math.isfinite(s["loss"]) else math.inf


def _by_progress(scores: list[dict], higher_is_better: bool, tie: float) -> list[dict]:
    """A rung's candidates, most promising first: by validation metric, and among candidates within `tie` of one
    another by validation loss (after a few steps every rate may still score chance while the loss already tells
    which are learning)."""
    return _tiers(scores, higher_is_better, tie, _loss)


def _beyond_leader(rung: list[dict], kind: str, score: Callable, higher_is_better: bool, tie: float) -> list[dict]:
    """An auto grid whose first-rung leader is an end of it: the rates past that end, a half-decade at a time (at
    most EXTEND), at the rung's length, while the leader stays an end."""
    added = []
    for _ in range(EXTEND if kind == "auto" else 0):
        order = _by_progress(rung + added, higher_is_better, tie)
        tried = sorted(s["lr"] for s in rung + added)
        if not order or order[0]["lr"] not in (tried[0], tried[-1]):
            break
        added.append(score(half_decade(order[0]["lr"], up=order[0]["lr"] == tried[-1])))
    return added


def _ranked(scores: list[dict], higher_is_better: bool, grid, tie: float, default: Optional[float]) -> list[dict]:
    """The finite candidates, best first: by validation metric, and among those within `tie` of one another's
    best the tie rule's order (the mode's default rate, then nearness to the grid's centre in log scale, then the
    lower validation loss)."""
    centre = (math.log10(min(grid)) + math.log10(max(grid))) / 2
    return _tiers(scores, higher_is_better, tie,
                  lambda s: (s["lr"] != default, abs(math.log10(s["lr"]) - centre), _loss(s)))


def _best(scores: list[dict], higher_is_better: bool, grid, tie: float, default: Optional[float]) -> tuple[dict, bool]:
    """(the winner, whether it won outright). The best validation metric wins; candidates within `tie` of it are
    tied, and a tie goes to the mode's default rate, else to the rate nearest the grid's centre (in log scale; a
    lower validation loss decides between two equally near). Diverged candidates never win."""
    order = _ranked(scores, higher_is_better, grid, tie, default)
    if not order:
        raise Diverged(f"every candidate learning rate of the search diverged ({', '.join(f'{x:g}' for x in grid)}); "
                       f"give lower rates")
    sign = 1 if higher_is_better else -1
    outright = len(order) == 1 or sign * order[1]["metric"] < sign * order[0]["metric"] - tie
    return order[0], outright
