"""One run's execution: a fresh Accelerator, the plan's loop (runners/train/loops.py), out-of-memory retries, and
the record built from the plan, the loop's outcome and what was measured (record.build_record). Every failure
becomes a `failed` or `diverged` record: the suite goes on."""
from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import Optional

import torch

from transferbench import provenance
from transferbench.config import RunSpec
from transferbench.errors import UserError
from transferbench.energy import EnergyMeter
from transferbench.memory import PeakMemory
from transferbench.outcome import Diverged, TrainOutcome
from transferbench.results import Result
from transferbench.tasks import task_for

from ..train import trackers
from ..train.loops import get_loop
from .plan import RunPlan
from .record import Measured, build_record

COMPILE_BACKEND = "inductor"  # torch.compile's default backend (tests swap in "eager": no C++ build)


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


def execute(plan: RunPlan, model_ref: Optional[str] = None, save_to: Optional[Path] = None,
            work_dir: Optional[Path] = None, env: Optional[dict] = None) -> Result:
    """Train and evaluate one run; its record.

    `model_ref` replaces the plan's model where it names something resolved at run time (a stage's checkpoint);
    `save_to`: the main process saves the trained model there (a pretrain stage's output);
    `work_dir`: scratch space for a loop that writes files (Ultralytics); `env`: provenance the executor adds.
    Out of memory in a loop that owns its batch split (the HF loop): retried up to the policy's oom_retries times,
    each at half the per-device batch with twice the gradient accumulation, so the effective batch and the
    optimisation stay the same; the record says so. The failed attempts' time counts in wall_seconds (and the
    cost), not in setup/train/eval seconds."""
    wall0 = time.perf_counter()
    state = process_state()
    device = state.device
    measured = Measured(provenance.device_name(device), state.num_processes if device.type == "cuda" else 1,
                        state.num_processes, {**provenance.env(), **(env or {})})
    attempt, charged, outcome = plan.spec, 0.0, None
    while True:
        outcome, oom, charged = _attempt(plan, attempt, measured, model_ref, save_to, work_dir)
        smaller = _halved(attempt) if oom and measured.oom_retries < plan.policy.oom_retries else None
        if smaller is None:
            break
        measured.oom_retries, attempt = measured.oom_retries + 1, smaller
    if oom and plan.policy.oom_retries:
        retries, batch = measured.oom_retries, measured.planned_batch[0]
        measured.error += (f" (still out of memory after {retries} retr{'y' if retries == 1 else 'ies'} at "
                           f"per-device batch {batch})" if retries else
                           f" (per-device batch {batch} cannot be halved: batch_size {attempt.hyper.batch_size} / "
                           f"processes / grad_accum {attempt.hyper.grad_accum * 2} is not whole)")
    measured.wall_seconds = time.perf_counter() - wall0 + charged
    measured.charged_seconds = charged
    return build_record(plan, outcome, measured)


def _attempt(plan: RunPlan, attempt: RunSpec, measured: Measured, model_ref: Optional[str],
             save_to: Optional[Path], work_dir: Optional[Path]) -> tuple[Optional[TrainOutcome], bool, float]:
    """One try of the plan with `attempt`'s hyper-parameters: (its outcome or None, whether it ran out of memory,
    seconds of shared work charged to it beyond its own wall time). Failures go into `measured`."""
    wall0 = time.perf_counter()
    # the suite's results folder (work_dir is <results>/work/<run_id>): trackers and saved models go there
    results_dir = work_dir.parent.parent if work_dir is not None and work_dir.parent.name == "work" else None
    accelerator = accelerator_for(attempt, results_dir)
    device = accelerator.device
    loop = get_loop(plan.loop)
    outcome, oom, charged = None, False, 0.0
    energy = EnergyMeter(device, measured.device_count)  # two counter reads: before and after the run
    measured.status, measured.error = "ok", None
    try:
        if loop.splits_batch:  # as planned (an out-of-memory error names it); the outcome says what trained
            measured.planned_batch = (attempt.hyper.per_device_batch(accelerator.num_processes),
                                      attempt.hyper.grad_accum)
        saving = {"model_dir": results_dir / "models" / plan.run_id} \
            if results_dir is not None and attempt.hyper.save_models == "final" else {}
        if results_dir is not None and plan.search is not None:  # a cell's search, recorded for its other seeds
            saving["search_dir"] = results_dir / "lr_search"
        this = dataclasses.replace(plan, spec=attempt)
        with PeakMemory(device) as mem, energy:
            before = time.perf_counter() - wall0  # the accelerator
            outcome = loop.run(this, task_for(attempt), model_ref or attempt.model,
                               accelerator, save_to, work_dir, **saving)
        outcome.setup_seconds += before
        charged = outcome.charged_seconds
        measured.peak_memory = (mem.peak, mem.kind)
    except Diverged as err:
        measured.status, measured.error = "diverged", str(err)
    except Exception as err:  # noqa: BLE001 - any failure is recorded and the suite goes on
        measured.status = "failed"
        measured.error = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        oom = loop.splits_batch and out_of_memory(err)
        if not isinstance(err, UserError):
            measured.env["traceback"] = traceback.format_exc()[-4000:]
    finally:
        measured.energy = energy.result()
        if oom or device.type != "cpu":  # free the model, optimizer and loaders before the retry/next run
            from accelerate.utils.memory import clear_device_cache

            accelerator.free_memory()
            clear_device_cache(garbage_collection=True)  # a full gc costs ~0.5 s: not after every CPU run
    if measured.status != "ok":
        outcome = None
    return outcome, oom, charged


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


def failed_result(plan: RunPlan, error: str, env: Optional[dict] = None) -> Result:
    """The record of a run that could not start (its stage failed, its worker died)."""
    state = process_state()
    measured = Measured(provenance.device_name(state.device), 1, state.num_processes,
                        {**provenance.env(), **(env or {})}, status="failed", error=error)
    return build_record(plan, None, measured)
