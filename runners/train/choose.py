"""What a run of the HF loop decides before its final training, on validation examples (never the test split): its
learning rate (a search, runners/train/lr_search.py) and, under `schedule: plateau`, its step count (the plateau
phase, runners/train/plateau.py). Both score the budget's own validation part unless the search is told to use
examples beyond the budget (`lr_search.validation: beyond`)."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional

from . import lr_search, plateau


@dataclasses.dataclass
class Choice:
    searched: Optional[dict] = None  # the record's lr_search
    plateau: Optional[dict] = None  # the record's plateau
    stop_reason: Optional[str] = None  # what ended the plateau phase: "plateau" or "cap"
    charged: float = 0.0  # shared work (cached features) charged to the run


def _epoch_steps(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def before_training(spec, search, task, data, train_set, held, key: tuple, candidate: Callable,
                    planned_steps: Callable, inputs: Optional[Callable] = None, share: Optional[Callable] = None):
    """(the spec the final training runs, the Choice). `candidate(spec, data, train_set, key, watch, **rung)` builds
    and trains one candidate on `train_set`, scoring data.eval (`rung`: lr_search's first-rung arguments);
    `planned_steps(hyper, n)` is the loop's step count for `n` examples; `held`: the examples beyond the budget for
    `lr_search.validation: beyond`, else None; `inputs(seed)`: (train_set, held) of another seed (the cell's search
    seed); `share(search)`: the cell's recorded choice or `search()`'s (runners/train/cell_search.py), as (rate,
    record, whether it searched)."""
    to_plateau = spec.hyper.schedule == "plateau"
    choice = Choice()
    if not to_plateau and search is None:
        return spec, choice
    phases = {}  # rate -> (its plateau phase's outcome, watch, seconds), of this run's seed

    def scored(s_spec, s_train, s_held):
        """(fit part, validation part, data scoring the validation part, its features' cache key)."""
        if s_held is None:  # validation from inside the budget: every label used is one the budget counts
            fit, validation = plateau.split(s_train, s_spec.hyper.plateau, s_spec.seed)
        else:
            fit, validation = s_train, s_held
        scoring = dataclasses.replace(data, eval=validation, validation=None)
        return fit, validation, scoring, key + ("validation", tuple(validation.indices))  # cached features: apart

    fit, validation, scoring, scoring_key = scored(spec, train_set, held)

    def phase(c, c_fit=fit, c_scoring=scoring, c_key=scoring_key, own=True):
        watch, t0 = plateau.Watch(c.hyper.plateau, task.higher_is_better), time.perf_counter()
        out = candidate(c, c_scoring, c_fit, c_key, watch)
        if own:
            phases[c.hyper.lr] = (out, watch, time.perf_counter() - t0)
        out.metrics = {task.metric_name: watch.best["metric"], "loss": watch.best["loss"]}  # scored by its best
        return out

    if search is not None:
        def run_search():
            own = search.seed is None or search.seed == spec.seed
            s_spec = spec if own else spec.model_copy(update={"seed": search.seed})
            s_fit, s_val, s_scoring, s_key = (fit, validation, scoring, scoring_key) if own else \
                scored(s_spec, *inputs(search.seed))
            steps = spec.hyper.plateau.max_steps if to_plateau else planned_steps(spec.hyper, len(s_fit))
            score = (lambda c: phase(c, s_fit, s_scoring, s_key, own)) if to_plateau else \
                (lambda c, **rung: candidate(c, s_scoring, s_fit, s_key, None, **rung))
            chance = 1 / len(data.labels) if task.metric_name == "accuracy" and data.labels else None
            lr, record, charged = lr_search.search(s_spec, search, steps, score, task.metric_name,
                                                   task.higher_is_better, len(s_val), chance)
            choice.charged += charged
            return lr, record

        if share is None:
            lr, choice.searched = run_search()
        else:
            lr, choice.searched, _ = share(run_search)
        spec = lr_search.chosen(spec, lr)
    if not to_plateau:
        return spec, choice
    if spec.hyper.lr not in phases:  # a given rate: one plateau phase
        choice.charged += phase(lr_search.candidate(spec, spec.hyper.lr, spec.hyper.plateau.max_steps)).charged_seconds
    out, watch, seconds = phases[spec.hyper.lr]
    batch = spec.hyper.batch_size
    final = plateau.final_steps(watch.best["step"], _epoch_steps(len(fit), batch), _epoch_steps(len(train_set), batch))
    choice.plateau = plateau.summary(watch, out.stop_reason, len(fit), len(validation), out.optimizer_steps, final,
                                     seconds)
    choice.stop_reason = choice.plateau["stopped"]
    final_hyper = spec.hyper.model_copy(update={"max_steps": final, "eval_every": lr_search.ONLY_FINAL_EVAL})
    return spec.model_copy(update={"hyper": final_hyper}), choice
