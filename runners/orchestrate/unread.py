"""`--set` items that nothing reads are refused: an override that changes neither any run's identity (run_id) nor
what a run writes (trackers, saved models, checkpoints) nor its policy (price, retries), although it changes a value
the runs hold, is set where no run looks (`plateau:` under `schedule: fixed`, `lr_search:` beside a given `lr`).
Measured, not listed: the suite is planned without each item and compared. An item that repeats the value the runs
already have is not refused; one that a more specific key hides everywhere was warned about when it was read."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from transferbench.config import Suite, load_suite
from transferbench.errors import UserError

from .plan import RunPlan, plan_runs

LAYERS = ("defaults", "benchmarks", "pretrain")  # where a run's values come from; other keys are the suite's own


def check_read(path: Path, overrides: Sequence[str], suite: Suite) -> None:
    """Refuse (UserError) the first item of `overrides` that nothing in `suite` (loaded from `path` with them) reads."""
    plans = None
    for i, item in enumerate(overrides):
        if item in suite.shadowed_overrides or item.partition("=")[0].strip().split(".")[0] not in LAYERS:
            continue
        try:
            without = plan_runs(load_suite(path, [*overrides[:i], *overrides[i + 1:]], warn=False))
        except UserError:  # the suite needs the item to be valid: it is read
            continue
        plans = plans if plans is not None else plan_runs(suite)
        if [_effect(p) for p in without] == [_effect(p) for p in plans] and \
                [p.spec.hyper for p in without] != [p.spec.hyper for p in plans]:
            raise UserError(f"--set {item}: no run of this suite reads it (every run's identity and outputs are the "
                            f"same without it; e.g. plateau settings under schedule: fixed, lr_search beside a given "
                            f"lr); drop it or set a key the runs read")


def _effect(plan: RunPlan) -> tuple:
    """What a run measures and writes: its identity, its output settings, its policy."""
    hyper = plan.spec.hyper
    return plan.run_id, hyper.report_to, hyper.save_models, hyper.checkpoint_every, plan.policy
