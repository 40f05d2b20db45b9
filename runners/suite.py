"""Run a suite: expand it into runs, skip what the store already has, check every pending run's inputs before
the first one trains, then execute each and append its result (main process only). A failed run is a row,
not a crash."""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Optional

from transferbench import models
from transferbench.claims import Claim
from transferbench.config import RunSpec, Suite, expand, shard
from transferbench.errors import UserError
from transferbench.modes import MODES
from transferbench.results import Result, Store
from .preflight import check_writable, preflight, warm_up
from .signals import check_stop, graceful_stop

# .execute and .hf_loop import torch: imported where a suite trains, so `run --dry-run` stays torch-free


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
              price_override: Optional[float] = None, rebuild_stages: bool = False, log=print) -> list[Result]:
    """Run every pending run of the suite; returns this invocation's results."""
    t0 = time.perf_counter()
    startup = process_seconds()  # interpreter start and imports, before this call
    from .execute import execute, failed_result, process_state
    from .stages import StageFailed, ensure_stage

    state = process_state()
    runs = expand_runs(suite, shard_spec)
    store = Store(results_dir)
    done = store.completed(strict=True)  # a line it cannot read might be a finished run: the user decides
    since = len(store.records())  # records appended after this point come from concurrent invocations
    state.wait_for_everyone()  # every process has read the store before the main one appends to it
    pending = [r for r in runs if r.run_id not in done]
    if not state.is_main_process:
        log = lambda *a, **k: None  # noqa: E731 - only the main process logs
    log(f"suite {suite.name}: {len(runs)} runs, {len(runs) - len(pending)} already in {store.path}, "
        f"{len(pending)} to run on {state.num_processes} process(es)")
    t_pre = time.perf_counter()
    if state.is_main_process and pending:
        check_writable(results_dir, pending, keep=False)  # a read-only folder is found now, not after training
    with state.main_process_first():  # the main process writes dataset caches; the others then read them
        preflight(pending, rebuild_stages, state.num_processes)
    t_warm = time.perf_counter()
    warm_up(pending)
    times = {"preflight_seconds": t_warm - t_pre, "warmup_seconds": time.perf_counter() - t_warm,
             "stages_seconds": 0.0}
    results, stages = [], {}  # stage name -> checkpoint folder, or the StageFailed of this invocation

    def train(i: int, spec: RunSpec) -> None:
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

    with graceful_stop():  # Ctrl-C: finish the current step, record nothing half-done, stop
        queue, waited = list(enumerate(pending, 1)), False
        while queue:  # a run another live invocation holds is tried again once it lets go of it
            busy = []
            for i, spec in queue:
                check_stop()
                verdict, claim = _claim_run(spec, results_dir, store, since, state)
                if verdict == "busy":
                    busy.append((i, spec))
                elif verdict != "run":
                    why = ("recorded meanwhile by another invocation; not trained again" if verdict == "done" else
                           "claimed by another machine; skipped (its claim: "
                           f"{Claim(results_dir / 'claims' / f'{spec.run_id}.claim').describe()})")
                    log(f"[{i}/{len(pending)}] {spec.task} {spec.model} {spec.mode} seed={spec.seed}: {why}")
                else:
                    try:
                        train(i, spec)
                    finally:
                        if claim is not None:
                            claim.release()
            queue = busy
            if queue:
                if not waited:
                    log(f"suite {suite.name}: {len(queue)} run(s) are being trained by another invocation; waiting "
                        f"to take over any it does not record")
                waited = True
                time.sleep(1.0)
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
        f"warm-up {row.get('warmup_seconds')}s, "
        f"stages {row['stages_seconds']}s, runs' setup {row['setup_seconds']}s) vs runs' train + eval {work:.1f}s"
        + (f": {wall / work:.2f}x" if work else "") + f" -> {results_dir / 'suite_timing.jsonl'}")
