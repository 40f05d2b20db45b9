"""Executors: what runs a suite's pending plans. Each implements one small interface (`submit` a plan, iterate the
`finished` records, `cancel` what is outstanding); the suite's driver claims each run, submits it, and is the one
writer of the store whichever executor runs it. `local` trains here, one run after another; `ray`
(ray_executor.py) schedules one Ray task per run."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, Optional

from transferbench.results import Result

from .plan import RunPlan


def train_one(plan: RunPlan, stage, work_dir: Path, env: Optional[dict] = None) -> Result:
    """A run's record, on whichever executor: trained on its stage's checkpoint folder (or its own model when
    `stage` is None), or failed without training when its stage failed (a StageFailed)."""
    from .execute import execute, failed_result
    from .stages import StageFailed

    if isinstance(stage, StageFailed):
        return failed_result(plan, str(stage), env)
    return execute(plan, model_ref=stage, work_dir=work_dir, env=env)


class Executor:
    """The interface. `times` holds the executor's own seconds (warm-up, start-up, stages) for the suite's timing
    line; they are spent outside every run's clock."""

    name = "executor"
    where = ""  # for the suite's first line: "1 process(es)", "Ray"

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def start(self, plans: list[RunPlan]) -> None:
        """Prepare for these plans before the first one trains (imports, workers)."""

    def submit(self, plan: RunPlan) -> None:
        raise NotImplementedError

    def finished(self, wait: bool) -> Iterator[tuple[RunPlan, Result]]:
        """The records of submitted runs as they finish; `wait`: until every submitted run has finished."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop what is outstanding (Ctrl-C, a driver failure); nothing half-done is returned."""

    def close(self) -> None:
        """Release what `start` took."""


class LocalExecutor(Executor):
    """Here, in this process, one run after another (under `accelerate launch`, every process takes part in each
    run). A run on a pretrain stage gets the stage's checkpoint first, built once per invocation."""

    name = "local"

    def __init__(self, results_dir: Path, rebuild_stages: bool = False, num_processes: int = 1, log=print) -> None:
        super().__init__()
        self.results_dir, self.rebuild_stages, self.log = results_dir, rebuild_stages, log
        self.where = f"{num_processes} process(es)"
        self.queue: list[RunPlan] = []
        self.stages: dict[str, object] = {}  # stage name -> checkpoint folder, or the StageFailed of this invocation
        self.times = {"warmup_seconds": 0.0, "stages_seconds": 0.0}

    def start(self, plans: list[RunPlan]) -> None:
        from .preflight import warm_up

        t0 = time.perf_counter()
        warm_up(plans)
        self.times["warmup_seconds"] = time.perf_counter() - t0

    def submit(self, plan: RunPlan) -> None:
        self.queue.append(plan)

    def finished(self, wait: bool) -> Iterator[tuple[RunPlan, Result]]:
        while self.queue:
            plan = self.queue.pop(0)
            yield plan, self._train(plan)

    def _train(self, plan: RunPlan) -> Result:
        from .stages import StageFailed, ensure_stage

        ref = None
        if plan.stage is not None:
            name = plan.stage.spec.stage_name
            if name not in self.stages:
                t0 = time.perf_counter()
                try:
                    self.stages[name] = ensure_stage(plan.stage, self.rebuild_stages, self.log)
                except StageFailed as err:
                    self.stages[name] = err
                self.times["stages_seconds"] += time.perf_counter() - t0
            ref = self.stages[name]
        return train_one(plan, ref, self.results_dir / "work" / plan.run_id)

    def cancel(self) -> None:
        self.queue.clear()
