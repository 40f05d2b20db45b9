"""Run a suite: expand, skip what the store already has, check every pending run's inputs before the first
one trains, then run each and append its result (main process only). A failed run is a row, not a crash."""
from __future__ import annotations

import datetime as dt
import importlib
import shutil
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

import transferbench
from transferbench import cost, flops, models, provenance, sources, speed
from transferbench.cache import atomic_dir, cache_dir
from transferbench.config import RunSpec, Suite, expand, shard
from transferbench.errors import UserError
from transferbench.memory import PeakMemory
from transferbench.modes import MODES, count_parameters, get_mode
from transferbench.results import SCHEMA_VERSION, Result, Store
from transferbench.tasks import get_task

from . import loop


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def process_state():
    """accelerate's per-process state, created once. Launched as N processes on a machine without CUDA, the
    processes form one gloo group (MULTI_CPU) instead of N runs that each believe they are alone."""
    import os

    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (
        not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    return PartialState(cpu=cpu)


def plan(suite: Suite, shard_spec: Optional[str] = None) -> list[RunSpec]:
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
        if task.train is None:  # the HF loop splits the effective batch evenly over processes x grad_accum
            _about(where, loop.per_device_batch, spec.hyper.batch_size, process_state().num_processes,
                   spec.hyper.grad_accum)
        else:
            options = [k for k in LOOP_OPTIONS if getattr(spec.hyper, k)]
            if options:
                raise UserError(f"{where}: {', '.join(options)} apply to the Hugging Face loop only; {spec.task} "
                                f"trains with its own loop: set {options[0]}: false for it")
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


LOOP_OPTIONS = ("compile", "channels_last", "gradient_checkpointing")  # speed options only the HF loop applies


def _about(where: str, check, *args):
    """`check(*args)`, its UserError prefixed with the benchmark it is about."""
    try:
        return check(*args)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


COMPILE_BACKEND = "inductor"  # torch.compile's default backend (tests swap in "eager": no C++ build)


def accelerator_for(spec: RunSpec):
    """A fresh Accelerator per run (precision, accumulation and compilation may differ between runs); the process
    group created by `accelerate launch` is kept. The suite's settings win over the launcher's: they are part of
    the run's identity."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(mixed_precision=spec.hyper.mixed_precision, gradient_accumulation_steps=spec.hyper.grad_accum,
                       cpu=process_state().device.type == "cpu",
                       dynamo_backend=COMPILE_BACKEND if spec.hyper.compile else "no")


def execute(spec: RunSpec, price_override: Optional[float] = None, model_ref: Optional[str] = None,
            save_to: Optional[Path] = None, work_dir: Optional[Path] = None) -> Result:
    """Train and evaluate one run; every failure becomes a `failed`/`diverged` record.

    `model_ref` replaces spec.model where it names something resolved at run time (a stage's checkpoint);
    `save_to`: the main process saves the trained model there (a pretrain stage's output);
    `work_dir`: scratch space for a task that owns its training loop.
    Out of memory in the HF loop: retried up to spec.oom_retries times, each at half the per-device batch with
    twice the gradient accumulation, so the effective batch and the optimisation stay the same; the record
    says so. (A task with its own loop records the failure; its batch is not the HF loop's to split.)
    The failed attempts' time counts in wall_seconds (and the cost), not in setup/train/eval seconds."""
    wall0 = time.perf_counter()
    attempt, retries = spec, 0
    while True:
        res, oom = _attempt(spec, attempt, model_ref, save_to, work_dir)
        started_at = started_at if retries else res.started_at
        smaller = _halved(attempt) if oom and retries < spec.oom_retries else None
        if smaller is None:
            break
        retries, attempt = retries + 1, smaller
    res.started_at, res.oom_retries = started_at, retries
    if oom and spec.oom_retries:
        res.error += (f" (still out of memory after {retries} retr{'y' if retries == 1 else 'ies'} at per-device "
                      f"batch {res.per_device_batch})" if retries else
                      f" (per-device batch {res.per_device_batch} cannot be halved: batch_size "
                      f"{attempt.hyper.batch_size} / processes / grad_accum {attempt.hyper.grad_accum * 2} is not whole)")
    return _finish(res, spec, time.perf_counter() - wall0, price_override)


def _attempt(spec: RunSpec, attempt: RunSpec, model_ref: Optional[str], save_to: Optional[Path],
             work_dir: Optional[Path]) -> tuple[Result, bool]:
    """One try of `spec` with `attempt`'s hyper-parameters: (its record, whether it ran out of memory)."""
    wall0 = time.perf_counter()
    accelerator = accelerator_for(attempt)
    device = accelerator.device
    res = _new_result(spec, accelerator)
    hyper, oom, task = attempt.hyper, False, None
    try:
        with PeakMemory(device) as mem:
            task = get_task(attempt.task)(attempt.task_args)
            ref = model_ref or attempt.model
            if task.train is not None:  # a task that owns its training loop fills the same record fields
                out = loop.LoopResult(**task.train(attempt, ref, accelerator, res, save_to, work_dir))
            else:  # per-device batch: the HF loop's split of the effective batch (loop.per_device_batch)
                res.grad_accum = hyper.grad_accum
                res.per_device_batch = hyper.batch_size // (accelerator.num_processes * hyper.grad_accum) or None
                out = _train(attempt, task, ref, accelerator, res, wall0)
                if save_to is not None:
                    _save(task, out.model, out.data, save_to, accelerator)
        res.eval_samples = int(out.metrics.pop("eval_samples"))
        res.metrics = out.metrics
        res.metric = out.metrics.get(task.metric_name)
        values = [p["metric"] for p in out.curve]
        res.best_metric = (max(values) if task.higher_is_better else min(values)) if values else None
        res.curve, res.time_to_target_s = out.curve, out.time_to_target_s
        res.train_seconds, res.eval_seconds = out.train_seconds, out.eval_seconds
        res.samples_per_second = out.samples_seen / out.train_seconds if out.train_seconds else None
        res.optimizer_steps, res.epochs_run, res.flops_estimate = out.optimizer_steps, out.epochs_run, out.flops
        res.setup_seconds = (res.setup_seconds or 0.0) + out.setup_seconds
        res.peak_flops = flops.peak_flops(res.device_name, hyper.mixed_precision)
        res.mfu = flops.mfu(res.flops_estimate, res.train_seconds, res.peak_flops, res.device_count)
        res.stop_reason, res.per_device_batch = out.stop_reason, out.per_device_batch or res.per_device_batch
        res.peak_memory_bytes, res.peak_memory_kind = mem.peak, mem.kind
    except loop.Diverged as err:
        res.status, res.error = "diverged", str(err)
    except Exception as err:  # noqa: BLE001 - any failure is recorded and the suite goes on
        res.status = "failed"
        res.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        # only the HF loop can trade per-device batch for accumulation; a foreign loop has its own batch rules
        oom = out_of_memory(err) and task is not None and task.train is None
        if not isinstance(err, UserError):
            res.env["traceback"] = traceback.format_exc()[-4000:]
    finally:
        out = None
        if oom or device.type != "cpu":  # free the model, optimizer and loaders before the retry/next run
            from accelerate.utils.memory import clear_device_cache

            accelerator.free_memory()
            clear_device_cache(garbage_collection=True)  # a full gc costs ~0.5 s: not after every CPU run
    return res, oom


def out_of_memory(err: BaseException) -> bool:
    """CUDA/XPU/MPS/CPU allocator failures (accelerate's own test) and Python's MemoryError."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or should_reduce_batch_size(err)


def _halved(spec: RunSpec) -> Optional[RunSpec]:
    """`spec` at half the per-device batch and twice the accumulation, or None when that is not whole."""
    grad_accum = spec.hyper.grad_accum * 2
    if spec.hyper.batch_size % (process_state().num_processes * grad_accum):
        return None
    return spec.model_copy(update={"hyper": spec.hyper.model_copy(update={"grad_accum": grad_accum})})


def setup(spec: RunSpec, task, ref: str):
    """(data, the budget's training subset, the model with its mode and speed options applied): everything
    the HF loop is given. Also used by benchmarks/perf, so the hand-written loop trains the very same thing."""
    from accelerate.utils import set_seed

    mode = get_mode(spec.mode)
    data = task.load_data(spec.dataset, ref)
    size = sources.budget_size(len(data.train), spec.train_samples, spec.train_fraction)
    train_set = torch.utils.data.Subset(data.train, sources.subset_indices(len(data.train), spec.seed, size))
    set_seed(spec.seed)  # same seed -> same head/scratch init, dropout and shuffling
    model = task.build_model(ref, data.labels, pretrained=mode.pretrained)
    if spec.hyper.gradient_checkpointing:  # on the task's model, before peft wraps it
        speed.enable_gradient_checkpointing(model)
    model = mode.prepare(model, task.head_names(model),
                         task.lora_targets_for(model, spec.hyper.lora_targets) if spec.mode == "lora" else [],
                         spec.hyper)
    if spec.hyper.channels_last:  # after peft, so LoRA's own convolutions are converted too
        model = speed.to_channels_last(model)
    return data, train_set, model


def _train(spec: RunSpec, task, ref: str, accelerator, res: Result, wall0: float) -> loop.LoopResult:
    """The HF-loop path: data subset for the budget, the mode applied to the model, the one training loop."""
    data, train_set, model = setup(spec, task, ref)
    res.dataset, res.train_samples = data.identity, len(train_set)
    res.params_total, res.params_trainable = count_parameters(model)
    res.setup_seconds = time.perf_counter() - wall0
    out = loop.train(spec, task, model, train_set, data, accelerator, res.params_total)
    out.data = data
    return out


def _new_result(spec: RunSpec, accelerator) -> Result:
    task_cls, device = get_task(spec.task), accelerator.device
    return Result(
        schema_version=SCHEMA_VERSION, run_id=spec.run_id, suite=spec.suite, task=spec.task,
        dataset=spec.dataset.source, model=spec.model, mode=spec.mode, seed=spec.seed, train_samples=None,
        metric_name=task_cls.metric_name, higher_is_better=task_cls.higher_is_better,
        target=spec.target.value if spec.target else None, device_name=provenance.device_name(device),
        device_count=accelerator.num_processes if device.type == "cuda" else 1,
        num_processes=accelerator.num_processes, mixed_precision=spec.hyper.mixed_precision, started_at=_now(),
        compile=spec.hyper.compile, channels_last=spec.hyper.channels_last,
        gradient_checkpointing=spec.hyper.gradient_checkpointing,
        config=spec.model_dump(mode="json"), env=provenance.env(),
    )


def _finish(res: Result, spec: RunSpec, wall_seconds: float, price_override: Optional[float]) -> Result:
    """Wall time and what it costs (DESIGN's cost model)."""
    res.wall_seconds = wall_seconds
    res.device_hours = cost.device_hours(wall_seconds, res.device_count)
    price = cost.lookup(res.device_name, price_override if price_override is not None else spec.price_per_device_hour)
    res.price_per_device_hour, res.price_date = price.per_device_hour, price.date
    res.cost_usd = cost.cost_usd(res.device_hours, price)
    res.finished_at = _now()
    return res


def failed_result(spec: RunSpec, error: str, price_override: Optional[float] = None) -> Result:
    res = _new_result(spec, accelerator_for(spec))
    res.status, res.error = "failed", error
    return _finish(res, spec, 0.0, price_override)


def _save(task, model, data, path: Path, accelerator) -> None:
    if accelerator.is_main_process:
        if hasattr(model, "merge_and_unload"):  # a LoRA stage: save plain weights with the adapters merged
            model = model.merge_and_unload()
        if path.exists():
            shutil.rmtree(path)
        with atomic_dir(path) as tmp:
            task.save_checkpoint(model, data, tmp)
    accelerator.wait_for_everyone()


SHIPPED_STAGES = Path(transferbench.__file__).parent / "stages"


def stage_dir(stage: RunSpec) -> Path:
    """Keyed by the stage's resolved spec: a changed stage trains anew, an unchanged one is reused."""
    return cache_dir() / "stages" / f"{stage.stage_name}-{stage.run_id}"


def shipped_stage(stage: RunSpec) -> Optional[Path]:
    """A stage checkpoint shipped as package data (transferbench/stages/, made by `transferbench stages
    --ship`), stamped with the run_id of the spec that trained it: used only when that spec is unchanged."""
    path = SHIPPED_STAGES / f"{stage.stage_name}-{stage.run_id}"
    return path if (path / "stage_result.json").exists() else None


def ensure_stage(stage: RunSpec, rebuild: bool = False, price_override: Optional[float] = None, log=print) -> str:
    """The checkpoint folder of a pretrain stage, training it first when it is neither in the cache nor
    shipped (or when `rebuild`)."""
    path = stage_dir(stage)
    ready = None if rebuild else ready_stage(stage)
    if ready is not None:
        if ready != path:
            log(f"pretrain stage {stage.stage_name}: using the shipped checkpoint {ready} (--rebuild-stages retrains)")
        return str(ready)
    log(f"pretrain stage {stage.stage_name}: training {stage.model} on {stage.dataset.source} -> {path}")
    res = execute(stage, price_override, save_to=path, work_dir=path.parent / f"{path.name}.work")
    if res.status != "ok":
        raise StageFailed(f"pretrain stage '{stage.stage_name}' {res.status}: {res.error}")
    if process_state().is_main_process:
        (path / "stage_result.json").write_text(res.to_json() + "\n")  # written last: the stage is complete
    log(f"pretrain stage {stage.stage_name}: {res.metric_name}={res.metric:.4f} on its own eval split "
        f"({res.wall_seconds:.1f}s)")
    return str(path)


def ready_stage(stage: RunSpec) -> Optional[Path]:
    """The stage's finished checkpoint folder, in the cache or shipped, or None when it must train."""
    path = stage_dir(stage)
    return path if (path / "stage_result.json").exists() else shipped_stage(stage)


class StageFailed(RuntimeError):
    pass


def run_suite(suite: Suite, results_dir: Path, shard_spec: Optional[str] = None,
              price_override: Optional[float] = None, rebuild_stages: bool = False, log=print) -> list[Result]:
    """Run every pending run of the suite; returns this invocation's results."""
    t0 = time.perf_counter()
    startup = process_seconds()  # interpreter start and imports, before this call
    state = process_state()
    runs = plan(suite, shard_spec)
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
    with loop.graceful_stop():  # Ctrl-C: finish the current step, record nothing half-done, stop
        for i, spec in enumerate(pending, 1):
            loop.check_stop()
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
            loop.check_stop()  # Ctrl-C during the run (a foreign loop's child may have died of it): not recorded
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
    row = dict(suite=name, finished_at=_now(), runs=len(results), runs_ok=sum(r.status == "ok" for r in results),
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
