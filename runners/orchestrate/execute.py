"""One run's execution: a fresh Accelerator, the task's loop (runners/train/loops.py), out-of-memory retries, and
the record filled from the loop's outcome (Result.apply) and priced (DESIGN's cost model). Every failure
becomes a `failed` or `diverged` record: the suite goes on."""
from __future__ import annotations

import datetime as dt
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from transferbench import cost, provenance
from transferbench.config import RunSpec
from transferbench.errors import UserError
from transferbench.energy import EnergyMeter
from transferbench.memory import PeakMemory
from transferbench.outcome import Diverged
from transferbench.results import SCHEMA_VERSION, Result
from transferbench.tasks import get_task

from ..train import trackers
from ..train.loops import get_loop

COMPILE_BACKEND = "inductor"  # torch.compile's default backend (tests swap in "eager": no C++ build)


def now() -> str:
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


def accelerator_for(spec: RunSpec, results_dir: Optional[Path] = None):
    """A fresh Accelerator per run (precision, accumulation and compilation may differ between runs); the process
    group created by `accelerate launch` is kept. The suite's settings win over the launcher's: they are part of
    the run's identity."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(mixed_precision=spec.hyper.mixed_precision, gradient_accumulation_steps=spec.hyper.grad_accum,
                       cpu=process_state().device.type == "cpu",
                       dynamo_backend=COMPILE_BACKEND if spec.hyper.compile else "no",
                       **trackers.accelerator_kwargs(spec, results_dir))  # report_to: log_with, project_dir


def execute(spec: RunSpec, price_override: Optional[float] = None, model_ref: Optional[str] = None,
            save_to: Optional[Path] = None, work_dir: Optional[Path] = None) -> Result:
    """Train and evaluate one run.

    `model_ref` replaces spec.model where it names something resolved at run time (a stage's checkpoint);
    `save_to`: the main process saves the trained model there (a pretrain stage's output);
    `work_dir`: scratch space for a loop that writes files (Ultralytics).
    Out of memory in a loop that owns its batch split (the HF loop): retried up to spec.oom_retries times, each
    at half the per-device batch with twice the gradient accumulation, so the effective batch and the
    optimisation stay the same; the record says so. The failed attempts' time counts in wall_seconds (and the
    cost), not in setup/train/eval seconds."""
    wall0, started_at = time.perf_counter(), now()
    attempt, retries = spec, 0
    while True:
        res, oom, charged = _attempt(spec, attempt, model_ref, save_to, work_dir)
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
    return _finish(res, spec, time.perf_counter() - wall0 + charged, price_override)


def _attempt(spec: RunSpec, attempt: RunSpec, model_ref: Optional[str], save_to: Optional[Path],
             work_dir: Optional[Path]) -> tuple[Result, bool, float]:
    """One try of `spec` with `attempt`'s hyper-parameters: (its record, whether it ran out of memory, seconds
    of shared work charged to it beyond its own wall time)."""
    wall0 = time.perf_counter()
    charged = 0.0
    # the suite's results folder (work_dir is <results>/work/<run_id>): trackers and saved models go there
    results_dir = work_dir.parent.parent if work_dir is not None and work_dir.parent.name == "work" else None
    accelerator = accelerator_for(attempt, results_dir)
    device = accelerator.device
    res = new_result(spec, accelerator)
    task_cls = get_task(attempt.task)
    loop = get_loop(task_cls.loop)
    oom = False
    energy = EnergyMeter(device, res.device_count)  # two counter reads: before and after the run
    try:
        if loop.splits_batch:  # as planned (an out-of-memory error names it); the outcome says what trained
            res.grad_accum = attempt.hyper.grad_accum
            res.per_device_batch = attempt.hyper.per_device_batch(accelerator.num_processes)
        saving = {"model_dir": results_dir / "models" / spec.run_id} \
            if results_dir is not None and attempt.hyper.save_models == "final" else {}
        with PeakMemory(device) as mem, energy:
            before = time.perf_counter() - wall0  # the accelerator and the record's provenance
            out = loop.run(attempt, task_cls(attempt.task_args), model_ref or attempt.model, accelerator, save_to,
                           work_dir, **saving)
        out.setup_seconds += before
        charged = out.charged_seconds
        res.apply(out)
        res.peak_memory_bytes, res.peak_memory_kind = mem.peak, mem.kind
    except Diverged as err:
        res.status, res.error = "diverged", str(err)
    except Exception as err:  # noqa: BLE001 - any failure is recorded and the suite goes on
        res.status = "failed"
        res.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        oom = loop.splits_batch and out_of_memory(err)
        if not isinstance(err, UserError):
            res.env["traceback"] = traceback.format_exc()[-4000:]
    finally:
        res.apply_energy(energy.result())
        out = None
        if oom or device.type != "cpu":  # free the model, optimizer and loaders before the retry/next run
            from accelerate.utils.memory import clear_device_cache

            accelerator.free_memory()
            clear_device_cache(garbage_collection=True)  # a full gc costs ~0.5 s: not after every CPU run
    return res, oom, charged


def out_of_memory(err: BaseException) -> bool:
    """CUDA/XPU/MPS/CPU allocator failures (accelerate's own test) and Python's MemoryError."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or should_reduce_batch_size(err)


def _halved(spec: RunSpec) -> Optional[RunSpec]:
    """`spec` at half the per-device batch and twice the accumulation, or None when that is not whole."""
    hyper = spec.hyper.model_copy(update={"grad_accum": spec.hyper.grad_accum * 2})
    try:
        hyper.per_device_batch(process_state().num_processes)
    except UserError:
        return None
    return spec.model_copy(update={"hyper": hyper})


def new_result(spec: RunSpec, accelerator) -> Result:
    """A run's record before training: identity, hardware, precision and provenance."""
    task_cls, device = get_task(spec.task), accelerator.device
    return Result(
        schema_version=SCHEMA_VERSION, run_id=spec.run_id, suite=spec.suite, task=spec.task,
        dataset=spec.dataset.source, model=spec.model, mode=spec.mode, seed=spec.seed, train_samples=None,
        metric_name=task_cls.metric_name, higher_is_better=task_cls.higher_is_better,
        target=spec.target.value if spec.target else None, device_name=provenance.device_name(device),
        device_count=accelerator.num_processes if device.type == "cuda" else 1,
        num_processes=accelerator.num_processes, mixed_precision=spec.hyper.mixed_precision, started_at=now(),
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
    res.finished_at = now()
    return res


def failed_result(spec: RunSpec, error: str, price_override: Optional[float] = None) -> Result:
    res = new_result(spec, accelerator_for(spec))
    res.status, res.error = "failed", error
    return _finish(res, spec, 0.0, price_override)
