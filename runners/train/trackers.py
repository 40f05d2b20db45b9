"""Experiment trackers (`report_to`) through accelerate's own `log_with`: one tracker run per transferbench run,
named readably, benchmark/model/mode/budget/seed (`run_name`), with its run_id as a tag and in its config, in the
suite's project, logging under <results>/trackers.

What is logged: the resolved run config at the start; per optimizer step `train/loss` (the mean loss of the
step's batches on the main process, the value the record's loss_curve holds) and `train/learning_rate` (the rate
that step used); per evaluation `eval/<metric>` for every metric of the task (and `validation/<metric>` under
early stopping). The HF loop logs while it trains; a foreign loop (Ultralytics, per epoch) logs from its outcome
when it returns, since it may train in a child process.
"""
from __future__ import annotations

import json
import os
import re
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
        if name == "tensorboard":  # its run folder is <logging_dir>/<project_name>: built here to name it per run
            from accelerate.tracking import TensorBoardTracker

            log_with.append(TensorBoardTracker(tensorboard_folder(spec), folder))
        else:
            log_with.append(name)
    if "mlflow" in names:  # mlflow's default store is ./mlruns of the working directory
        os.environ.setdefault("MLFLOW_TRACKING_URI", (folder / "mlruns").resolve().as_uri())
    return {"log_with": log_with, "project_dir": str(folder)}


def run_name(spec) -> str:
    """benchmark/model/mode/budget/seed, e.g. `topics/all-minilm-l6-v2/finetune/n64/seed0`: what a tracker's run
    list shows (the benchmark is its dataset, with its Hub configuration; a Hub id or path by its last part)."""
    source = spec.dataset.source.split(":", 1)[1] if spec.dataset.source.startswith(("builtin:", "hub:")) \
        else spec.dataset.source
    bench = (Path(source).name or source) + (f"-{spec.dataset.config}" if spec.dataset.config else "")
    model = spec.model.replace(":", "-") if spec.model.startswith("pretrain:") else Path(spec.model).name or spec.model
    budget = f"n{spec.train_samples}" if spec.train_samples is not None else \
        f"frac{spec.train_fraction:g}" if spec.train_fraction is not None else "all"
    return "/".join(re.sub(r"[^\w.=-]+", "-", part) for part in (bench, model, spec.mode, budget, f"seed{spec.seed}"))


def tensorboard_folder(spec) -> str:
    """TensorBoard's run folder: the run's name, its last part followed by the first 8 characters of run_id, since
    TensorBoard merges every event file of one folder (a rerun with other settings into the same results folder
    would otherwise join the old run's curves)."""
    return f"{run_name(spec)}-{spec.run_id[:8]}"


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
    name = run_name(spec)  # run_id: in the config (every tracker) and a tag where the tracker has tags
    accelerator.init_trackers(spec.suite, config=flat_config(spec), init_kwargs={
        "wandb": {"name": name, "dir": str(accelerator.project_dir), "tags": [spec.run_id]},
        "trackio": {"name": name},
        "mlflow": {"run_name": name, "tags": {"transferbench.run_id": spec.run_id}},
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
