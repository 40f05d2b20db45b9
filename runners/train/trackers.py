"""Experiment trackers (`report_to`) through accelerate's own `log_with`: one tracker run per transferbench run,
named by its run_id, in the suite's project, logging under <results>/trackers.

What is logged: the resolved run config at the start; per optimizer step `train/loss` (the mean loss of the
step's batches on the main process, the value the record's loss_curve holds) and `train/learning_rate` (the rate
that step used); per evaluation `eval/<metric>` for every metric of the task (and `validation/<metric>` under
early stopping). The HF loop logs while it trains; a foreign loop (Ultralytics, per epoch) logs from its outcome
when it returns, since it may train in a child process.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional


def accelerator_kwargs(spec, results_dir: Optional[Path]) -> dict:
    """`log_with` and `project_dir` for the run's Accelerator; {} when it reports to nothing (or has no results
    folder: a pretrain stage, whose checkpoint is its output)."""
    names = spec.hyper.report_to
    if not names or results_dir is None:
        return {}
    folder = Path(results_dir) / "trackers"
    log_with = []
    for name in names:
        if name == "tensorboard":  # its run folder is <logging_dir>/<project_name>: built here to name it by run_id
            from accelerate.tracking import TensorBoardTracker

            log_with.append(TensorBoardTracker(spec.run_id, folder))
        else:
            log_with.append(name)
    if "mlflow" in names:  # mlflow's default store is ./mlruns of the working directory
        os.environ.setdefault("MLFLOW_TRACKING_URI", (folder / "mlruns").resolve().as_uri())
    return {"log_with": log_with, "project_dir": str(folder)}


def flat_config(spec) -> dict:
    """The resolved run spec as one level of scalars (what every tracker's config/hparams accepts): nested keys
    dotted, lists and mappings as JSON text, plus the output settings the spec's dump leaves out."""
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value and prefix.count(".") < 2:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (dict, list, tuple)):
            out[prefix] = json.dumps(value, sort_keys=True, default=str)
        elif value is not None:
            out[prefix] = value

    walk("", spec.model_dump(mode="json"))
    out.update({"run_id": spec.run_id, "hyper.report_to": ",".join(spec.hyper.report_to),
                "hyper.save_models": spec.hyper.save_models})
    return out


def start(accelerator, spec) -> bool:
    """Open the trackers' runs (main process); False when the run reports to nothing."""
    if not accelerator.log_with:
        return False
    name = spec.run_id
    accelerator.init_trackers(spec.suite, config=flat_config(spec), init_kwargs={
        "wandb": {"name": name, "dir": str(accelerator.project_dir)},
        "trackio": {"name": name},
        "mlflow": {"run_name": name},
    })
    return True


def log_outcome(accelerator, spec, epochs: list[dict]) -> None:
    """A foreign loop's run, logged after it returned: per epoch {step, train_loss, lr, metrics}."""
    if not start(accelerator, spec):
        return
    try:
        for e in epochs:
            values = {k: v for k, v in (("train/loss", e.get("train_loss")), ("train/learning_rate", e.get("lr")),
                                        ("train/epoch", e.get("epoch"))) if v is not None}
            values.update({f"eval/{k}": v for k, v in (e.get("metrics") or {}).items()})
            accelerator.log(values, step=e["step"])
    finally:
        accelerator.end_training()
