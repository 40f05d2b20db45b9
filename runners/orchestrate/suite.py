"""Run a suite: expand it into runs, skip what the store already has, check every pending run's inputs before
the first one trains, then execute each and append its result (main process only). A failed run is a row,
not a crash."""
from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Optional

from transferbench import models
from transferbench.claims import Claim
from transferbench.config import RunSpec, Suite, expand, shard
from transferbench.errors import UserError
from transferbench.modes import MODES
from transferbench.results import Result, Store
from ..train.loops import searches_lr
from .preflight import check_writable, preflight, warm_up
from ..signals import check_stop, graceful_stop

# .execute and .hf_loop import torch: imported where a suite trains, so `run --dry-run` stays torch-free


def expand_runs(suite: Suite, shard_spec: Optional[str] = None) -> list[RunSpec]:
    """The suite's runs (models x modes x budgets x seeds), or shard I/N of them."""
    for module in suite.imports:  # a task registered from outside the package (its @register_task runs)
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"imports: cannot import '{module}' ({err}); is it on PYTHONPATH?") from None
    models.trust_remote_code(suite.trust_remote_code)
    runs = expand(suite, {name: mode.default_lr for name, mode in MODES.items()}, searches_lr)
    return shard(runs, shard_spec) if shard_spec else runs


def _claim_run(spec: RunSpec, results_dir: Path, store: Store, since: int, state) -> tuple[str, Optional[Claim]]:
    """Claim a run before training it: ('run', claim) when this invocation now holds it; ('done', None) when
    another invocation recorded it since this one started (ok, or failed: it is not trained twice); ('busy',
    None) while a live invocation on this machine holds it; ('remote', None) when another machine holds it. The
    main process decides; under a multi-process launch every process follows its verdict."""
    verdict, claim = "run", None
    if state.is_main_process:
        claim = Claim(results_dir / "claims" / f"{spec.run_id}.claim")
        if not claim.try_acquire():
            verdict, claim = ("remote" if claim.remote() else "busy"), None
        else:
            records = store.records()
            if spec.run_id in {r["run_id"] for r in records if r.get("status") == "ok"} | \
                    {r["run_id"] for r in records[since:]}:
                claim.release()
                verdict, claim = "done", None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        verdict = broadcast_object_list([verdict], from_process=0)[0]
    return verdict, claim


def run_suite(suite: Suite, results_dir: Path, shard_spec: Optional[str] = None,
              price_override: Optional[float] = None, rebuild_stages: bool = False, log=print,
              ray_options=None) -> list[Result]:
    """Run every pending run of the suite; returns this invocation's results. The executor is `local` (here,
    one run after another) unless `ray_options` (runners/ray_executor.RayOptions) asks for Ray."""
    t0 = time.perf_counter()
    startup = process_seconds()  # interpreter start and imports, before this call
    from .execute import execute, failed_result, process_state
    from .stages import StageFailed, ensure_stage

    state = process_state()
    if ray_options is not None:
        ray_options.check()
        if state.num_processes > 1:
            raise UserError("--executor ray schedules whole runs on Ray's devices; start it with `transferbench "
                            "run`, not under `accelerate launch` with several processes")
    runs = expand_runs(suite, shard_spec)
    store = Store(results_dir)
    done = store.completed(strict=True)  # a line it cannot read might be a finished run: the user decides
    since = len(store.records())  # records appended after this point come from concurrent invocations
    state.wait_for_everyone()  # every process has read the store before the main one appends to it
    pending = [r for r in runs if r.run_id not in done]
    if not state.is_main_process:
        log = lambda *a, **k: None  # noqa: E731 - only the main process logs
    where = "Ray" if ray_options is not None else f"{state.num_processes} process(es)"
    log(f"suite {suite.name}: {len(runs)} runs, {len(runs) - len(pending)} already in {store.path}, "
        f"{len(pending)} to run on {where}")
    t_pre = time.perf_counter()
    if state.is_main_process and pending:
        check_writable(results_dir, pending, keep=False)  # a read-only folder is found now, not after training
    with state.main_process_first():  # the main process writes dataset caches; the others then read them
        preflight(pending, rebuild_stages, state.num_processes)
    t_warm = time.perf_counter()
    ray = started = None
    if ray_options is not None and pending:
        from . import ray_executor

        ray, started = ray_executor.connect(ray_options)  # workers warm up themselves, outside their runs' clocks
    elif ray_options is None:
        warm_up(pending)
    times = {"preflight_seconds": t_warm - t_pre, "stages_seconds": 0.0,
             ("ray_start_seconds" if ray else "warmup_seconds"): time.perf_counter() - t_warm}
    results, stages = [], {}  # stage name -> checkpoint folder, or the StageFailed of this invocation
    bar = _suite_bar(suite.name, len(pending), state.is_main_process)
    say = bar.write if not bar.disable else log  # log lines above the bar, not through it

    def finish(i: int, spec: RunSpec, res: Result) -> None:
        """The one place a finished run is recorded (the main process, or Ray's driver, alone appends)."""
        results.append(res)
        if state.is_main_process:
            store.append(res)
            metric = f"{res.metric_name}={res.metric:.4f}" if res.metric is not None else res.error
            say(f"[{i}/{len(pending)}] {spec.task} {spec.model} {spec.mode} n={res.train_samples} "
                f"seed={spec.seed}: {res.status} {metric} ({res.wall_seconds:.1f}s)")
        bar.update(1)

    def train(i: int, spec: RunSpec) -> None:
        ref = None
        bar.set_postfix_str(f"{spec.model} {spec.mode} n={_budget(spec)} seed={spec.seed}", refresh=True)
        if spec.stage is not None:
            if spec.stage.stage_name not in stages:
                t_stage = time.perf_counter()
                try:
                    stages[spec.stage.stage_name] = ensure_stage(spec.stage, rebuild_stages, price_override, say)
                except StageFailed as err:
                    stages[spec.stage.stage_name] = err
                times["stages_seconds"] += time.perf_counter() - t_stage
            ref = stages[spec.stage.stage_name]
        if isinstance(ref, StageFailed):
            res = failed_result(spec, str(ref), price_override)
        else:
            res = execute(spec, price_override, model_ref=ref, work_dir=results_dir / "work" / spec.run_id)
        check_stop()  # Ctrl-C during the run (a foreign loop's child may have died of it): not recorded
        finish(i, spec, res)

    def claim(i: int, spec: RunSpec, wait: bool = True) -> tuple[str, Optional[Claim]]:
        """Claim a run before it trains; `wait` False (Ray): a run a live invocation here holds is left to it
        (the next invocation trains it if that one does not record it)."""
        verdict, held = _claim_run(spec, results_dir, store, since, state)
        if verdict in ("done", "remote") or (verdict == "busy" and not wait):
            why = ("recorded meanwhile by another invocation; not trained again" if verdict == "done" else
                   "held by another live invocation; skipped" if verdict == "busy" else
                   "claimed by another machine; skipped (its claim: "
                   f"{Claim(results_dir / 'claims' / f'{spec.run_id}.claim').describe()})")
            say(f"[{i}/{len(pending)}] {spec.task} {spec.model} {spec.mode} seed={spec.seed}: {why}")
            bar.update(1)
        return verdict, held

    from tqdm.contrib.logging import logging_redirect_tqdm

    try:  # log lines (a YOLO run's epochs) are written above the suite bar, not through it
        with graceful_stop(), logging_redirect_tqdm([logging.getLogger("transferbench")]):
            queue = list(enumerate(pending, 1))
            if ray is not None:
                ray_executor.run_pending(
                    ray, ray_options, queue, lambda i, spec: claim(i, spec, wait=False), finish,
                    lambda spec, error: failed_result(spec, error, price_override), results_dir, price_override,
                    rebuild_stages, tuple(suite.imports), suite.trust_remote_code, say, check_stop)
            else:
                _local(queue, claim, train, suite.name, say)
    finally:
        bar.close()
        if ray is not None:
            ray_executor.shutdown(ray, started)
    if results and state.is_main_process:
        _record_timing(suite.name, results, results_dir, startup, time.perf_counter() - t0, times, log)
    return results


def _local(queue: list, claim, train, name: str, log) -> None:
    """The `local` executor: one run after another in this process (under `accelerate launch`, every process
    takes part in each run). A run another live invocation holds is tried again once it lets go of it."""
    waited = False
    while queue:
        busy = []
        for i, spec in queue:
            check_stop()
            verdict, held = claim(i, spec)
            if verdict == "busy":
                busy.append((i, spec))
            elif verdict == "run":
                try:
                    train(i, spec)
                finally:
                    if held is not None:
                        held.release()
        queue = busy
        if queue:
            if not waited:
                log(f"suite {name}: {len(queue)} run(s) are being trained by another invocation; waiting "
                    f"to take over any it does not record")
            waited = True
            time.sleep(1.0)


def _budget(spec: RunSpec):
    return spec.train_samples if spec.train_samples is not None else spec.train_fraction or "all"


def _suite_bar(name: str, total: int, main: bool):
    """The outer bar: runs done / total, elapsed, and the rest estimated from the runs finished so far (off
    when stderr is not a terminal, under -q, and on every process but the main one)."""
    from tqdm.auto import tqdm

    quiet = logging.getLogger("transferbench").level > logging.INFO  # -q
    return tqdm(total=total, desc=f"suite {name}", unit="run", dynamic_ncols=True, position=0,
                disable=None if main and not quiet else True)


def process_seconds() -> Optional[float]:
    """Seconds since this process started (psutil), so a suite's wall time includes start-up and imports."""
    import psutil

    try:
        started = psutil.Process().create_time()
    except psutil.Error:
        return None
    return max(0.0, time.time() - started)


def _record_timing(name: str, results: list[Result], results_dir: Path, startup: Optional[float], seconds: float,
                   times: dict, log) -> None:
    """The invocation's wall time against its runs' train + eval time, appended to suite_timing.jsonl: what
    the harness costs beyond training (start-up, preflight, stages, per-run setup)."""
    import json

    from .execute import now

    total = lambda key: sum(getattr(r, key) or 0.0 for r in results)  # noqa: E731
    work = total("train_seconds") + total("eval_seconds")
    wall = seconds + (startup or 0.0)
    row = dict(suite=name, finished_at=now(), runs=len(results), runs_ok=sum(r.status == "ok" for r in results),
               wall_seconds=round(wall, 3), startup_seconds=startup and round(startup, 3),
               suite_seconds=round(seconds, 3), train_eval_seconds=round(work, 3),
               train_seconds=round(total("train_seconds"), 3), eval_seconds=round(total("eval_seconds"), 3),
               setup_seconds=round(total("setup_seconds"), 3), runs_wall_seconds=round(total("wall_seconds"), 3),
               **{k: round(v, 3) for k, v in times.items()}, overhead_ratio=round(wall / work, 4) if work else None)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        with open(results_dir / "suite_timing.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as err:  # the runs are recorded; their timing summary is not worth a failure
        log(f"suite {name}: timing not written to {results_dir / 'suite_timing.jsonl'} ({err.strerror})")
        return
    log(f"suite {name}: wall {wall:.1f}s (start-up {row['startup_seconds']}s, preflight {row['preflight_seconds']}s, "
        + (f"Ray start {row['ray_start_seconds']}s, " if "ray_start_seconds" in row else
           f"warm-up {row.get('warmup_seconds')}s, ")
        + f"stages {row['stages_seconds']}s, runs' setup {row['setup_seconds']}s) vs runs' train + eval {work:.1f}s"
        + (f": {wall / work:.2f}x" if work else "") + f" -> {results_dir / 'suite_timing.jsonl'}")
