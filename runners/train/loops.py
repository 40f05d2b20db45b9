"""The training loops, by name. A task names the loop that trains it (`Task.loop`: "hf" by default); the
runner looks it up here and never asks which kind of task it runs. Every loop returns a TrainOutcome."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transferbench.errors import UserError, did_you_mean

from . import hf_check, ultralytics  # torch-free at import (hf_loop is imported at its first run)


@dataclass(frozen=True)
class Loop:
    name: str
    # (spec, task, model_ref, accelerator, save_to, work_dir) -> TrainOutcome
    run: Callable
    # (spec, num_processes) -> None: raises UserError for what it cannot train, before anything trains;
    # num_processes None: a dry run (no torch: checks that need a model are left to the real run's preflight)
    check: Callable
    # out of memory: retry at half the per-device batch with twice the accumulation (the loop owns the batch)
    splits_batch: bool
    # () -> None: imports what `run` would import on its first call (the suite warms up before its first run)
    warm_up: Callable = lambda: None
    # it can choose a run's learning rate by a search (`lr: auto`, runners/train/lr_search.py); unset lr means that
    searches_lr: bool = False


LOOPS: dict[str, Loop] = {}


def register_loop(loop: Loop) -> Loop:
    LOOPS[loop.name] = loop
    return loop


def get_loop(name: str) -> Loop:
    if name not in LOOPS:
        raise UserError(f"unknown training loop '{name}'{did_you_mean(name, LOOPS)}")
    return LOOPS[name]


def _hf(name: str) -> Callable:
    """hf_loop's function `name`, its module (torch) imported at the first call: checks run in a dry run."""
    def call(*args, **kwargs):
        from . import hf_loop

        return getattr(hf_loop, name)(*args, **kwargs)

    return call


register_loop(Loop("hf", _hf("run"), hf_check.check, splits_batch=True, warm_up=_hf("warm_up"), searches_lr=True))
register_loop(Loop("ultralytics", ultralytics.run, ultralytics.check, splits_batch=False))


def searches_lr(task: str) -> bool:
    """Whether the loop training `task` searches learning rates (an unknown task: preflight names it later)."""
    from transferbench.tasks import get_task

    try:
        return get_loop(get_task(task).loop).searches_lr
    except UserError:
        return True
