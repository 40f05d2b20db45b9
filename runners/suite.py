"""Run a suite: expand it into runs, skip what the store already has, check every pending run's inputs before
the first one trains, then execute each and append its result (main process only). A failed run is a row,
not a crash."""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import time
from pathlib import Path
from typing import Optional

from transferbench import checkpoints, models, sources
from transferbench.claims import Claim
from transferbench.config import RunSpec, Suite, expand, shard
from transferbench.errors import UserError
from transferbench.modes import MODES
from transferbench.results import Result, Store
from transferbench.tasks import get_task

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


def preflight(runs: list[RunSpec], rebuild_stages: bool = False, num_processes: Optional[int] = None) -> None:
    """Fail fast, before any training, on bad input: unknown task, bad task_args, unloadable dataset or model,
    a model of the wrong kind, a missing column, a budget larger than the data, a target on a metric the task
    does not compute. A run on a pretrain stage is checked with the stage's starting model (same
    architecture and preprocessing); the stage itself is checked like a run when it will train (a cached or
    shipped stage will not: loading its large source set would only cost time)."""
    from .loops import get_loop
    from .stages import usable_stage

    if num_processes is None:  # a dry run: the launcher's count (what accelerate reads), without importing torch
        num_processes = int(os.environ.get("WORLD_SIZE", "1"))

    seen = set()
    stages = [r.stage for r in runs if r.stage and (rebuild_stages or not usable_stage(r.stage))]
    for spec in stages + runs:
        model = spec.stage.model if spec.stage else spec.model
        task = get_task(spec.task)(spec.task_args)
        where = (f"pretrain stage '{spec.stage_name}'" if spec.stage_name else f"{spec.task} on {spec.dataset.source}"
                 f" with {model} ({spec.mode})")
        _about(where, get_loop(task.loop).check, spec, num_processes)
        _about(where, task.check_run, spec)
        key = (spec.task, spec.dataset.model_dump_json(), model, str(spec.task_args), spec.budget_key)
        if key in seen:
            continue
        seen.add(key)
        check_checkpoint(model)  # a truncated weights/config file is named before anything tries to load it
        task.check_model(model)  # the model and the data must load (a foreign loop's task checks its own)
        data = task.load_data(spec.dataset, model)
        available = len(data.train)
        if spec.hyper.early_stopping:  # the validation carve leaves the rest for the budgets
            available = len(_about(where, sources.validation_split, available,
                                   spec.hyper.early_stopping.validation_samples)[1])
        _about(where, sources.budget_size, available, spec.train_samples, spec.train_fraction)
        if spec.target and spec.target.metric not in task.metric_names:
            raise UserError(f"target metric '{spec.target.metric}' is not computed by {spec.task} "
                            f"(it computes {', '.join(task.metric_names)})")


def warm_up(runs: list[RunSpec]) -> None:
    """Pay the one-time costs of the pending runs before the first one starts its clock, so they land in the
    suite's own timing, never in a run's setup/train/eval seconds or cost (the first run is scratch seed 0:
    it would look costlier than its seeds 1-2): each loop's and mode's lazy imports, and once per (task,
    task_args, model) the task's metric modules and model code (Task.warm_up). A warm-up that fails changes
    nothing: the run itself then reports the error."""
    from transferbench.modes import get_mode

    from .loops import get_loop

    done = set()  # what has been warmed: ("mode", name) and (task, task_args, model)
    for spec in runs:
        model = spec.stage.model if spec.stage else spec.model  # a stage's output has its starting architecture
        for key in (("mode", spec.mode), (spec.task, str(spec.task_args), model)):
            if key in done:
                continue
            done.add(key)
            try:
                if key[0] == "mode":
                    for module in get_mode(spec.mode).imports:
                        importlib.import_module(module)
                else:
                    task = get_task(spec.task)(spec.task_args)
                    get_loop(task.loop).warm_up()
                    task.warm_up(model)
            except Exception:  # noqa: BLE001, S112 - the run reports it, with its own context
                continue


def check_checkpoint(model: str) -> None:
    """A local model (folder or file) whose weights or config are truncated or corrupt: one line naming the file."""
    if model.startswith(("pretrain:", "config:")) or not Path(model).expanduser().exists():
        return
    problem = checkpoints.problem(Path(model).expanduser())
    if problem:
        raise UserError(f"model {model}: corrupt checkpoint file {problem}; save or download it again")


def check_writable(results_dir: Path, runs: list[RunSpec], keep: bool = True) -> None:
    """Prove, before anything trains, that every folder a run writes to takes a file (create + fsync + remove a
    probe), that the store can be appended to, and that the names the runs will create fit the filesystem. With
    keep=False the folders this check had to create are removed again (a refused or dry run leaves nothing
    behind; a run creates them when it first writes there)."""
    from transferbench.cache import cache_dir

    store = results_dir / "runs.jsonl"
    if store.is_symlink() and not store.exists():
        raise UserError(f"results store {store} is a symlink to {os.readlink(store)}, which does not exist; remove "
                        f"it or point it at a file")
    if store.exists() and not store.is_file():
        raise UserError(f"results store {store} is not a file; give --results-dir a folder of your own")
    folders = {results_dir: [f"{r.run_id}.claim" for r in runs[:1]] + ["suite_timing.jsonl"],
               results_dir / "work": [r.run_id for r in runs[:1]]}
    for stage in {r.stage.stage_name: r.stage for r in runs if r.stage}.values():
        name = f"{stage.stage_name}-{stage.run_id}.v{time.time_ns()}.work.claim"  # the longest a stage creates
        folders.setdefault(cache_dir() / "stages", []).append(name)
    for folder, names in folders.items():
        _probe(folder, names, keep)
    if store.exists():
        try:
            os.close(os.open(store, os.O_WRONLY | os.O_APPEND))
        except OSError as err:
            raise UserError(f"results store {store} is not writable ({err.strerror}); fix its permissions or give "
                            f"another --results-dir") from None


def _probe(folder: Path, names: list[str], keep: bool) -> None:
    created, p = [], folder
    while not p.exists() and not p.is_symlink() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file, not a folder; give --results-dir a folder of your own")
        folder.mkdir(parents=True, exist_ok=True)
        limit = os.pathconf(folder, "PC_NAME_MAX")
        long = [n for n in names if len(os.fsencode(n)) > limit]
        if long:
            raise UserError(f"{folder}: the filesystem cannot hold the name '{long[0]}' ({len(os.fsencode(long[0]))} "
                            f"bytes > {limit}); use a shorter suite or stage name")
        probe = folder / f".write-probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        what = ("the filesystem cannot hold this name" if err.errno == errno.ENAMETOOLONG else
                f"it is not writable ({err.strerror})")
        raise UserError(f"{folder}: {what}; give another --results-dir (or TRANSFERBENCH_CACHE for stages)") from None
    finally:
        if not keep:
            for c in created:
                with contextlib.suppress(OSError):
                    c.rmdir()


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
