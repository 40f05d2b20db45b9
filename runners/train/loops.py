"""The training loops, by name, and what each can train. A task names the loop for each model family it trains
(`Task.loop_for`: "hf" by default); `loop_for` here is how every caller finds it, so the runner never asks which
kind of task or model it runs. Every loop returns a TrainOutcome."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transferbench.errors import UserError, check_unique, did_you_mean

from . import hf_check, ultralytics  # torch-free at import (hf_loop is imported at its first run)

# run options that only some loops implement: a loop lists those it does in `supports`; the others are refused
OPTIONS = ("compile", "channels_last", "gradient_checkpointing", "cached_features", "eval_samples", "early_stopping")


@dataclass(frozen=True)
class Loop:
    name: str
    title: str  # how messages name it
    # (plan, task, model_ref, accelerator, save_to, work_dir, model_dir=...) -> TrainOutcome
    run: Callable
    # (spec, num_processes, dry_run) -> None: raises UserError for what it cannot train, before anything trains;
    # a dry run imports no torch (checks that need a model are left to the real run's preflight)
    own_check: Callable
    # out of memory: retry at half the per-device batch with twice the accumulation (the loop owns the batch)
    splits_batch: bool
    supports: frozenset = frozenset()  # which of OPTIONS it implements
    # () -> None: imports what `run` would import on its first call (the suite warms up before its first run)
    warm_up: Callable = lambda: None
    # it can choose a run's learning rate by a search (`lr: auto`, runners/train/lr_search.py); unset lr means that
    searches_lr: bool = False
    # the schedules it trains (`schedule:`): "fixed" (epochs / max_steps as given) and "plateau" (runners/train/plateau.py)
    schedules: frozenset = frozenset({"fixed"})

    def check(self, spec, num_processes: int, dry_run: bool) -> None:
        """Options it lacks, then its own check."""
        missing = [k for k in OPTIONS if k not in self.supports and getattr(spec.hyper, k)]
        if missing:
            able = " or ".join(loop.title for loop in LOOPS.values() if set(missing) <= loop.supports) or "no loop"
            raise UserError(f"{', '.join(missing)} apply to {able} only; {spec.task} trains with {self.title} here: "
                            f"set {missing[0]}: false for it")
        if spec.hyper.schedule not in self.schedules:
            raise UserError(f"schedule: {spec.hyper.schedule} applies to {self.title} only where it has one; "
                            f"{spec.task} trains with {self.title} here: set schedule: fixed with epochs for it")
        self.own_check(spec, num_processes, dry_run)


LOOPS: dict[str, Loop] = {}


def register_loop(loop: Loop) -> Loop:
    check_unique("training loop", loop.name, LOOPS, loop)
    LOOPS[loop.name] = loop
    return loop


def get_loop(name: str) -> Loop:
    if name not in LOOPS:
        raise UserError(f"unknown training loop '{name}'{did_you_mean(name, LOOPS)}")
    return LOOPS[name]


def loop_for(task_cls, model_ref: str) -> Loop:
    """The loop that trains task `task_cls` (a registered Task class) on the model reference `model_ref`."""
    return get_loop(task_cls.loop_for(model_ref))


def _hf(name: str) -> Callable:
    """hf_loop's function `name`, its module (torch) imported at the first call: checks run in a dry run."""
    def call(*args, **kwargs):
        from . import hf_loop

        return getattr(hf_loop, name)(*args, **kwargs)

    call.__module__, call.__qualname__ = f"{__package__}.hf_loop", name  # what a duplicate's error names
    return call


register_loop(Loop("hf", "the Hugging Face loop", _hf("run"), hf_check.check, splits_batch=True,
                   supports=frozenset(OPTIONS), warm_up=_hf("warm_up"), searches_lr=True,
                   schedules=frozenset({"fixed", "plateau"})))
register_loop(Loop("ultralytics", "Ultralytics' loop", ultralytics.run, ultralytics.check, splits_batch=False,
                   warm_up=ultralytics.warm_up))
