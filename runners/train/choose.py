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
                    planned_steps: Callable):
    """(the spec the final training runs, the Choice). `candidate(spec, data, train_set, key, watch)` builds and
    trains one candidate on `train_set`, scoring data.eval; `planned_steps(hyper, n)` is the loop's step count for
    `n` examples; `held`: the examples beyond the budget for `lr_search.validation: beyond`, else None."""
    to_plateau = spec.hyper.schedule == "plateau"
    choice = Choice()
    if not to_plateau and search is None:
        return spec, choice
    if held is None:  # validation from inside the budget: every label used is one the budget counts
        fit, validation = plateau.split(train_set, spec.hyper.plateau, spec.seed)
    else:
        fit, validation = train_set, held
    scoring = dataclasses.replace(data, eval=validation, validation=None)
    scoring_key = key + ("validation", tuple(validation.indices))  # cached features of these examples: apart
    phases = {}  # rate -> (its plateau phase's outcome, watch, seconds)

    def phase(c):
        watch, t0 = plateau.Watch(c.hyper.plateau, task.higher_is_better), time.perf_counter()
        out = candidate(c, scoring, fit, scoring_key, watch)
        phases[c.hyper.lr] = (out, watch, time.perf_counter() - t0)
        out.metrics = {task.metric_name: watch.best["metric"], "loss": watch.best["loss"]}  # scored by its best
        return out

    if search is not None:
        steps = spec.hyper.plateau.max_steps if to_plateau else planned_steps(spec.hyper, len(fit))
        score = phase if to_plateau else (lambda c: candidate(c, scoring, fit, scoring_key, None))
        chance = 1 / len(data.labels) if task.metric_name == "accuracy" and data.labels else None
        lr, choice.searched, choice.charged = lr_search.search(spec, search, steps, score, task.metric_name,
                                                               task.higher_is_better, len(validation), chance)
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
