"""One Ultralytics YOLO run: Ultralytics' own trainer and loop, with transferbench's mode applied to the model,
and its outputs (validation metrics, results.csv) turned into the fields of a TrainOutcome.

`fit(job)` takes and returns plain JSON-able dicts, so it runs the same in this process or, under a
multi-process launch, in a child process with a clean environment (`python -m transferbench.runners.train.yolo_fit`).
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import shutil
import sys
import time
from copy import deepcopy
from pathlib import Path

from transferbench.cache import atomic_dir

from ..signals import check_stop, stop_requested
from . import yolo_env

log = logging.getLogger("transferbench.runners.train.yolo_fit")  # also when run as __main__ (the child)

# our metric name -> Ultralytics' validation key (box metrics)
METRICS = {"map50_95": "metrics/mAP50-95(B)", "map50": "metrics/mAP50(B)",
           "precision": "metrics/precision(B)", "recall": "metrics/recall(B)"}


def backbone_length(model) -> int:
    """How many of the model's layers are the backbone (the rest, neck and Detect, is the task's head)."""
    return len(model.yaml["backbone"])


def head_names(model) -> list[str]:
    """Neck + detection head: what Ultralytics' `freeze=<backbone length>` leaves trainable."""
    return [f"model.{i}" for i in range(backbone_length(model), len(model.model))]


def default_lora_targets(model) -> str:
    """Every Conv2d of the backbone (Ultralytics names them `conv` inside its Conv blocks)."""
    layers = "|".join(str(i) for i in range(backbone_length(model)))
    return rf"model\.({layers})(\..+)?\.conv"


def _load_source(init: dict):
    """The model whose weights seed the run: a transferbench stage (safetensors) or an Ultralytics .pt."""
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint

    if init["kind"] == "pt":
        model, _ = load_checkpoint(init["path"])  # Ultralytics' own (pickled) checkpoint format
        return model
    from safetensors.torch import load_file

    model = DetectionModel(deepcopy(init["arch"]), nc=len(init["labels"]), verbose=False)
    model.load_state_dict(load_file(init["path"]))
    return model


@contextlib.contextmanager
def _rng_kept():
    """Run the body without advancing torch's, numpy's or Python's random state."""
    import random

    import numpy as np
    import torch

    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        yield
    random.setstate(state[0])
    np.random.set_state(state[1])


def _trainer_class():
    from torch import nn
    from ultralytics.models.yolo.detect import DetectionTrainer

    from transferbench.config import Hyper
    from transferbench.modes import get_mode

    class Trainer(DetectionTrainer):
        """Ultralytics' detection trainer with three changes: the model gets transferbench's mode; the
        trainable set stays what the mode decided; validation follows `eval_every` and the result is the
        last validation (no re-validation of best.pt, which would select on the eval split)."""

        job: dict

        def get_model(self, cfg=None, weights=None, verbose=True):
            job = self.job
            # The source model is built outside the run's random stream (its own random init would otherwise
            # consume it): the target's fresh layers get the same initialisation for a seed in every mode, the
            # one Ultralytics' trainer gives after its init_seeds(seed + 1).
            with _rng_kept():
                init = _load_source(job["init"]) if job["init"] and job["pretrained"] else None
            arch = deepcopy(job["arch"]) if isinstance(job["arch"], dict) else cfg  # cfg: a .pt's own architecture
            model = super().get_model(cfg=arch, weights=init, verbose=False)
            model.peft_in_place = True  # Ultralytics indexes its layers: LoRA goes in place, no wrapper
            hyper = Hyper(**job["hyper"])
            targets = hyper.lora_targets or default_lora_targets(model)
            model = get_mode(job["mode"], hyper).prepare(model, head_names(model), targets, hyper)
            self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
            return model

        def _build_train_pipeline(self):
            # Ultralytics has just set requires_grad on every parameter it did not freeze; the mode decides.
            for name, p in self.model.named_parameters():
                p.requires_grad = name in self.trainable and ".dfl" not in name  # DFL is a fixed projection
            super()._build_train_pipeline()  # the optimizer is built here, after the mask

        def _model_train(self):
            super()._model_train()
            for m in self.model.modules():  # frozen BatchNorm layers keep their running statistics
                if isinstance(m, nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()

        def validate(self):
            if stop_requested():  # Ctrl-C/SIGTERM: the run is not recorded, so its metrics are not needed
                return self.metrics, self.fitness
            epoch = self.epoch + 1
            if epoch % self.job["eval_every"] and epoch < self.epochs:
                return self.metrics, self.fitness  # not an evaluation epoch
            t0 = time.perf_counter()
            metrics, fitness = super().validate()
            self.eval_seconds += time.perf_counter() - t0
            self.evaluated.append(epoch)
            return metrics, fitness

        def final_eval(self):
            pass

        def save_model(self):
            # Ultralytics writes last.pt/best.pt (weights + optimizer state) every epoch and at the last one even
            # with save=False; transferbench reads neither (save_models: final keeps one stripped copy: save_final)
            return super().save_model() if self.args.save else False

    return Trainer


def fit(job: dict) -> dict:
    """Train and evaluate one run. `job`: overrides (Ultralytics trainer arguments), arch, init, pretrained,
    mode, hyper, eval_every, target, n_train, save_to. Returns TrainOutcome's recorded fields."""
    wall0 = time.perf_counter()
    yolo_env.load()
    from transferbench.modes import adapter_bytes, count_parameters, merge_lora_in_place

    trainer = _trainer_class()(overrides=job["overrides"])
    from ultralytics.utils import callbacks

    # Only transferbench's callbacks: trackers are `report_to`'s (yolo_env also switches Ultralytics' logger
    # integrations off in its settings), and its analytics and platform callbacks have nothing to do here
    trainer.callbacks = callbacks.get_default_callbacks()
    trainer.job, trainer.eval_seconds, trainer.evaluated = job, 0.0, []
    marks = {}
    epochs = {}  # epoch -> {epoch, step, train_loss, lr, metrics}: the per-epoch lines and the trackers' rows

    def on_train_start(t):
        marks["start"] = time.perf_counter()
        marks["params"] = count_parameters(t.model)
        marks["adapter"] = adapter_bytes(t.model)

    def on_batch_end(t):  # Ctrl-C/SIGTERM: Ultralytics' own stop flag ends the epoch after this batch
        if stop_requested():
            t.stop = True

    def on_fit_epoch_end(t):  # after the epoch's validation (when it had one): one line per epoch
        epoch = t.epoch + 1
        losses = t.label_loss_items(t.tloss) if t.tloss is not None else {}
        row = {"epoch": epoch, "step": epoch * len(t.train_loader) // t.accumulate,
               "train_loss": round(sum(losses.values()), 5) if losses else None, "lr": t.lr.get("lr/pg0"),
               "metrics": {k: float(t.metrics[v]) for k, v in METRICS.items() if v in t.metrics}
               if epoch in t.evaluated else {}}
        epochs[epoch] = row
        parts = [f"{k.split('/')[-1].removesuffix('_loss')} {v:.3f}" for k, v in losses.items()]
        score = (f", mAP50-95 {row['metrics']['map50_95']:.4f}, mAP50 {row['metrics']['map50']:.4f}"
                 if row["metrics"] else "")
        loss = f"loss {row['train_loss']:.4f} ({', '.join(parts)})" if losses else "loss -"
        log.info(f"{job.get('label', 'yolo')}: epoch {epoch}/{t.epochs} {loss}{score}")

    trainer.add_callback("on_train_start", on_train_start)
    trainer.add_callback("on_train_batch_end", on_batch_end)
    trainer.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    trainer.train()
    check_stop()  # stopped early by a signal: Interrupted, so the run is not recorded
    total = time.perf_counter() - marks["start"]
    trainer_metrics = trainer.metrics or {}
    rows = list(csv.DictReader(trainer.csv.read_text(encoding="utf-8").splitlines())) if trainer.csv.exists() else []
    curve = []
    for row in rows:  # Ultralytics logs every epoch; only the validated ones carry fresh metrics
        epoch = int(float(row["epoch"]))
        if epoch in trainer.evaluated:
            curve.append({"step": epoch * len(trainer.train_loader) // trainer.accumulate,
                          "samples_seen": epoch * job["n_train"], "seconds": float(row["time"]),
                          "metric": float(row[METRICS["map50_95"]]),
                          **{k: float(row[v]) for k, v in METRICS.items() if k != "map50_95" and v in row},
                          # this epoch's mean training loss (box + cls + dfl, as Ultralytics sums them)
                          "train_loss": epochs.get(epoch, {}).get("train_loss")})
    target = job["target"]
    reached = [p["seconds"] for p in curve if target is not None and p["metric"] >= target]
    epochs_run = trainer.epoch + 1
    if job["save_to"]:
        model = merge_lora_in_place(deepcopy(trainer.ema.ema).float())
        save_stage(model, trainer.data["names"], Path(job["save_to"]))
    saved = save_final(trainer, Path(job["model_dir"])) if job.get("model_dir") else None
    metrics = {k: float(trainer_metrics.get(v, math.nan)) for k, v in METRICS.items()}
    return {
        "metrics": metrics, "eval_samples": int(getattr(trainer.validator, "seen", 0) or 0),
        "curve": curve, "time_to_target_s": reached[0] if reached else None,
        # Ultralytics' `time` replaces `epochs` by as many as fit the time
        "stop_reason": "max_seconds" if "time" in job["overrides"] else "epochs",
        "per_device_batch": trainer.args.batch // max(1, trainer.world_size), "grad_accum": trainer.accumulate,
        "train_seconds": total - trainer.eval_seconds, "eval_seconds": trainer.eval_seconds,
        "samples_seen": epochs_run * job["n_train"],
        "optimizer_steps": epochs_run * len(trainer.train_loader) // trainer.accumulate,
        "epochs_run": float(epochs_run), "params_total": marks["params"][0], "params_trainable": marks["params"][1],
        "adapter_bytes": marks["adapter"],
        "setup_seconds": marks["start"] - wall0, "saved_model": saved,
        "epochs": [epochs[e] for e in sorted(epochs)],  # for the trackers (popped by the launcher)
    }


def save_final(trainer, folder: Path) -> str:
    """The final weights as Ultralytics keeps a run's weights: its trainer's own checkpoint of the EMA model (what
    every evaluation scored), stripped of the optimizer as Ultralytics strips the weights it ships, as
    `last.pt` (the final epoch's, not best.pt: picking the best epoch would select on the eval split).
    `YOLO(folder / "last.pt")` loads it; LoRA adapters are merged first, so loading needs no peft."""
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import strip_optimizer

    from transferbench.modes import merge_lora_in_place

    ema = trainer.ema.ema
    trainer.ema.ema = merge_lora_in_place(deepcopy(ema))
    try:
        DetectionTrainer.save_model(trainer)  # writes the trainer's last.pt (and best.pt when this epoch is best)
    finally:
        trainer.ema.ema = ema
    if folder.exists():
        shutil.rmtree(folder)
    with atomic_dir(folder) as tmp:
        strip_optimizer(trainer.last, str(tmp / "last.pt"))
    for f in (trainer.last, trainer.best):  # nothing else keeps a .pt (save: false)
        Path(f).unlink(missing_ok=True)
    return str(folder)


def save_stage(model, names: dict, folder: Path) -> None:
    """A detection checkpoint in transferbench's format: safetensors weights (fp16, as Ultralytics saves its
    own), the architecture and the label map; `_load_source` reads it back."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    arch = {k: v for k, v in model.yaml.items() if k != "yaml_file"}
    arch["nc"] = len(names)
    (folder / "arch.json").write_text(json.dumps(arch, indent=1))
    (folder / "labels.json").write_text(json.dumps([names[i] for i in sorted(names)]))


def main(argv: list[str]) -> int:
    """Child-process entry: read a job file, write the result beside it (`.result.json`, renamed into place
    last so a waiting process never reads half a file)."""
    job_file = Path(argv[0])
    job = json.loads(job_file.read_text())
    # the parent's verbosity; the per-epoch lines go to stderr, which the child shares with the terminal
    logger = logging.getLogger("transferbench")
    logger.setLevel(job.get("log_level", logging.INFO))
    logger.addHandler(logging.StreamHandler(sys.stderr))
    try:
        out = {"ok": fit(job)}
    except Exception as err:  # noqa: BLE001 - reported to the parent, which records the run as failed
        out = {"error": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
    tmp = job_file.with_suffix(".result.tmp")
    tmp.write_text(json.dumps(out))
    tmp.rename(job_file.with_suffix(".result.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
