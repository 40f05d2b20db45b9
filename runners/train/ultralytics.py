"""The Ultralytics loop, for models of the YOLO family: what it cannot train as asked, and launch glue.

The run becomes a JSON-able job (yolo_job.py), gets its devices here and is trained by yolo_fit.py. Under a
multi-process `accelerate launch` the main process trains in a child process whose environment lacks the launcher's
rank variables (Ultralytics reads RANK/LOCAL_RANK and would believe it is already a DDP worker); on GPUs that child
uses Ultralytics' own DDP over the same devices; the other processes wait for its result, so N processes never
train N copies.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from transferbench.cache import cache_dir
from transferbench.errors import UserError
from transferbench.outcome import TrainOutcome
from transferbench.tasks import get_task

from . import trackers, yolo_env
from .yolo_job import check_pass_through, job as make_job
from .yolo_model import check_weights, resolve_model

LAUNCHER_VARIABLES = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                      "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"}
ULTRALYTICS_MAX_GRAD_NORM = 10.0  # Ultralytics' trainer clips every step at this norm, whatever it is told


def check(spec, num_processes: int, dry_run: bool) -> None:
    """What Ultralytics' trainer cannot do as asked, and weights a mode needs but the model lacks. Torch-free (a
    model YAML is read, not parsed by Ultralytics), so a dry run checks the same."""
    h = spec.hyper
    if h.max_grad_norm != type(h).model_fields["max_grad_norm"].default:
        raise UserError(f"max_grad_norm: {spec.task} trains with Ultralytics' own loop, which always clips at "
                        f"{ULTRALYTICS_MAX_GRAD_NORM:g}; leave max_grad_norm unset for it")
    if h.max_steps is not None:
        raise UserError("max_steps is not supported by Ultralytics' loop; use epochs or max_seconds")
    if h.epochs != int(h.epochs):
        raise UserError(f"epochs must be a whole number (got {h.epochs})")
    check_pass_through(get_task(spec.task)(spec.task_args).args.ultralytics)
    ref = resolve_model(spec.model_source, parse=False)
    if spec.stage is None:  # a stage's checkpoint exists only once it has trained: checked when used
        check_weights(spec.mode, ref, spec.model, h)


def warm_up() -> None:
    """Ultralytics' import (its trainer, validator and model code): what a first run would otherwise pay."""
    yolo_env.load()
    import ultralytics.models.yolo.detect  # noqa: F401


def run(plan, task, model_ref: str, accelerator, save_to: Optional[Path] = None,
        work_dir: Optional[Path] = None, model_dir: Optional[Path] = None) -> TrainOutcome:
    """One run (a RunPlan). `model_dir`: the final weights saved there as an Ultralytics checkpoint (save_models:
    final). Trackers (report_to) get the run's epochs when it returns: it may have trained in a child process."""
    spec = plan.spec
    # absolute: Ultralytics resolves a relative `project` against its own runs dir, outside the results dir
    work = (Path(work_dir) if work_dir else cache_dir() / "work" / spec.run_id).resolve()
    job = make_job(spec, task, model_ref, work, save_to)
    name = spec.model if spec.model.startswith("pretrain:") else Path(spec.model).name
    job["label"] = f"{name} n={job['n_train']} {spec.mode} s{spec.seed}"  # names each per-epoch line
    job["log_level"] = logging.getLogger("transferbench").getEffectiveLevel()
    job["model_dir"] = str(Path(model_dir).resolve()) if model_dir is not None else None
    cuda = accelerator.device.type == "cuda"
    job["overrides"] = {
        "workers": 2 if cuda else 0,  # CPU: loader workers would take the cores training needs
        **job["overrides"],
        # N processes on GPUs: Ultralytics' own DDP over the same devices; on CPU it trains in one process
        "device": ",".join(str(i) for i in range(accelerator.num_processes)) if cuda else "cpu",
    }
    if accelerator.num_processes > 1 or "LOCAL_RANK" in os.environ:
        out = _fit_in_child(job, work, accelerator)
    else:
        from .yolo_fit import fit

        out = fit(job)
    epochs = out.pop("epochs", [])
    if out.get("saved_model"):
        out["saved_model"] = str(model_dir)  # as the results folder was given (the child needed it absolute)
    outcome = TrainOutcome(**out, dataset=job["dataset"], train_samples=job["n_train"],
                           max_grad_norm=ULTRALYTICS_MAX_GRAD_NORM)
    trackers.log_outcome(accelerator, spec, epochs)
    return outcome


def _fit_in_child(job: dict, work: Path, accelerator) -> dict:
    """The main process trains in a child process; the others poll for its result file (no collective that
    could time out however long training takes)."""
    job_file = work / "job.json"
    result = job_file.with_suffix(".result.json")
    if accelerator.is_main_process:
        result.unlink(missing_ok=True)  # a result left by an earlier, interrupted invocation
    accelerator.wait_for_everyone()  # every process is here now: none reads a stale result below
    if accelerator.is_main_process:
        job_file.write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("ACCELERATE_")}
        yolo_env.prepare_environment(env)
        proc = subprocess.run([sys.executable, "-m", "transferbench.runners.train.yolo_fit", str(job_file)], env=env)
        if proc.returncode and not result.exists():
            raise RuntimeError(f"the Ultralytics child process exited with code {proc.returncode}")
    while not result.exists():
        time.sleep(0.5)
    out = json.loads(result.read_text())
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["ok"]
