"""Run a suite: expand it into runs, skip what the store already has, check every pending run's inputs before
the first one trains, then execute each and append its result (main process only). A failed run is a row,
not a crash."""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Optional

from transferbench import models, sources
from transferbench.config import RunSpec, Suite, expand, shard
from transferbench.errors import UserError
from transferbench.modes import MODES
from transferbench.results import Result, Store
from transferbench.tasks import get_task

from .execute import execute, failed_result, now, process_state
from .loops import get_loop
from .signals import check_stop, graceful_stop
from .stages import StageFailed, ensure_stage, ready_stage


def expand_runs(suite: Suite, shard_spec: Optional[str] = None) -> list[RunSpec]:
    """The suite's runs (models x modes x budgets x seeds), or shard I/N of them."""
    for module in suite.imports:  # a task registered from outside the package (its @register_task runs)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"imports: cannot import '{module}' ({err}); is it on PYTHONPATH?") from None
    models.trust_remote_code(suite.trust_remote_code)
    runs = expand(suite, {name: mode.default_lr for name, mode in MODES.items()})
    return shard(runs, shard_spec) if shard_spec else runs


def preflight(runs: list[RunSpec], rebuild_stages: bool = False) -> None:
    """Fail fast, before any training, on bad input: unknown task, bad task_args, unloadable dataset or model,
    a model of the wrong kind, a missing column, a budget larger than the data, a target on a metric the task
    does not compute. A run on a pretrain stage is checked with the stage's starting model (same
    architecture and preprocessing); the stage itself is checked like a run when it will train (a cached or
    shipped stage will not: loading its large source set would only cost time)."""
    seen = set()
    stages = [r.stage for r in runs if r.stage and (rebuild_stages or not ready_stage(r.stage))]
    for spec in stages + runs:
        model = spec.stage.model if spec.stage else spec.model
        task = get_task(spec.task)(spec.task_args)
        where = (f"pretrain stage '{spec.stage_name}'" if spec.stage_name else f"{spec.task} on {spec.dataset.source}"
                 f" with {model} ({spec.mode})")
        _about(where, get_loop(task.loop).check, spec, process_state().num_processes)
        _about(where, task.check_run, spec)
        key = (spec.task, spec.dataset.model_dump_json(), model, str(spec.task_args), spec.budget_key)
        if key in seen:
            continue
        seen.add(key)
        task.check_model(model)  # the model and the data must load (a foreign loop's task checks its own)
        data = task.load_data(spec.dataset, model)
        _about(where, sources.budget_size, len(data.train), spec.train_samples, spec.train_fraction)
        if spec.target and spec.target.metric not in task.metric_names:
            raise UserError(f"target metric '{spec.target.metric}' is not computed by {spec.task} "
                            f"(it computes {', '.join(task.metric_names)})")


def _about(where: str, check, *args):
    """`check(*args)`, its UserError prefixed with the benchmark it is about."""
    try:
        return check(*args)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def run_suite(suite: Suite, results_dir: Path, shard_spec: Optional[str] = None,
              price_override: Optional[float] = None, rebuild_stages: bool = False, log=print) -> list[Result]:
    """Run every pending run of the suite; returns this invocation's results."""
    t0 = time.perf_counter()
    startup = process_seconds()  # interpreter start and imports, before this call
    state = process_state()
    runs = expand_runs(suite, shard_spec)
    store = Store(results_dir)
    done = store.completed(strict=True)  # a line it cannot read might be a finished run: the user decides
    state.wait_for_everyone()  # every process has read the store before the main one appends to it
    pending = [r for r in runs if r.run_id not in done]
    if not state.is_main_process:
        log = lambda *a, **k: None  # noqa: E731 - only the main process logs
    log(f"suite {suite.name}: {len(runs)} runs, {len(runs) - len(pending)} already in {store.path}, "
        f"{len(pending)} to run on {state.num_processes} process(es)")
    t_pre = time.perf_counter()
    with state.main_process_first():  # the main process writes dataset caches; the others then read them
        preflight(pending, rebuild_stages)
    times = {"preflight_seconds": time.perf_counter() - t_pre, "stages_seconds": 0.0}
    results, stages = [], {}  # stage name -> checkpoint folder, or the StageFailed of this invocation
    with graceful_stop():  # Ctrl-C: finish the current step, record nothing half-done, stop
        for i, spec in enumerate(pending, 1):
            check_stop()
            ref = None
            if spec.stage is not None:
                if spec.stage.stage_name not in stages:
                    t_stage = time.perf_counter()
                    try:
                        stages[spec.stage.stage_name] = ensure_stage(spec.stage, rebuild_stages, price_override, log)
                    except StageFailed as err:
                        stages[spec.stage.stage_name] = err
                    times["stages_seconds"] += time.perf_counter() - t_stage
                ref = stages[spec.stage.stage_name]
            if isinstance(ref, StageFailed):
                res = failed_result(spec, str(ref), price_override)
            else:
                res = execute(spec, price_override, model_ref=ref, work_dir=results_dir / "work" / spec.run_id)
            check_stop()  # Ctrl-C during the run (a foreign loop's child may have died of it): not recorded
            results.append(res)
            if state.is_main_process:
                store.append(res)
                metric = f"{res.metric_name}={res.metric:.4f}" if res.metric is not None else res.error
                log(f"[{i}/{len(pending)}] {spec.task} {spec.model} {spec.mode} n={res.train_samples} "
                    f"seed={spec.seed}: {res.status} {metric} ({res.wall_seconds:.1f}s)")
    if results and state.is_main_process:
        _record_timing(suite.name, results, results_dir, startup, time.perf_counter() - t0, times, log)
    return results


def process_seconds() -> Optional[float]:
    """Seconds since this process started (Linux /proc), so a suite's wall time includes start-up and imports."""
    import os

    try:
        start_ticks = float(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return max(0.0, time.time() - boot - start_ticks / os.sysconf("SC_CLK_TCK"))


def _record_timing(name: str, results: list[Result], results_dir: Path, startup: Optional[float], seconds: float,
                   times: dict, log) -> None:
    """The invocation's wall time against its runs' train + eval time, appended to suite_timing.jsonl: what
    the harness costs beyond training (start-up, preflight, stages, per-run setup)."""
    import json

    total = lambda key: sum(getattr(r, key) or 0.0 for r in results)  # noqa: E731
    work = total("train_seconds") + total("eval_seconds")
    wall = seconds + (startup or 0.0)
    row = dict(suite=name, finished_at=now(), runs=len(results), runs_ok=sum(r.status == "ok" for r in results),
               wall_seconds=round(wall, 3), startup_seconds=startup and round(startup, 3),
               suite_seconds=round(seconds, 3), train_eval_seconds=round(work, 3),
               train_seconds=round(total("train_seconds"), 3), eval_seconds=round(total("eval_seconds"), 3),
               setup_seconds=round(total("setup_seconds"), 3), runs_wall_seconds=round(total("wall_seconds"), 3),
               **{k: round(v, 3) for k, v in times.items()}, overhead_ratio=round(wall / work, 4) if work else None)
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / "suite_timing.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    log(f"suite {name}: wall {wall:.1f}s (start-up {row['startup_seconds']}s, preflight {row['preflight_seconds']}s, "
        f"stages {row['stages_seconds']}s, runs' setup {row['setup_seconds']}s) vs runs' train + eval {work:.1f}s"
        + (f": {wall / work:.2f}x" if work else "") + f" -> {results_dir / 'suite_timing.jsonl'}")
