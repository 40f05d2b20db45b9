"""A run as an Ultralytics job: the suite's hyper-parameters mapped onto Ultralytics' trainer arguments, the budget
written as an image list, and what runners/train/yolo_fit.py needs to apply the mode. Plain, JSON-able dicts, so
the job runs the same in this process or in a child process."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import yaml

from transferbench import sources
from transferbench.errors import UserError
from transferbench.modes import get_mode

from .yolo_model import check_weights, resolve_model

# trainer arguments transferbench sets from the suite; `task_args.ultralytics` may not override them
OWNED = {"model", "data", "epochs", "time", "batch", "nbs", "lr0", "optimizer", "weight_decay", "warmup_epochs",
         "cos_lr", "imgsz", "seed", "device", "amp", "project", "name", "exist_ok", "freeze", "val", "pretrained",
         "fraction", "resume"}

# what `task_args.ultralytics` may set: training hyper-parameters only (augmentation, loss gains, schedule
# details), never a path, an output location or a behaviour that writes files (save_dir, project, name, cache,
# save_period, ...): Ultralytics would write outside the results folder
PASS_THROUGH = {
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr", "bgr",
    "mosaic", "mixup", "cutmix", "copy_paste", "copy_paste_mode", "auto_augment", "erasing", "close_mosaic",
    "box", "cls", "dfl", "pose", "kobj", "momentum", "warmup_momentum", "warmup_bias_lr", "lrf", "dropout",
    "label_smoothing", "multi_scale", "rect", "single_cls", "overlap_mask", "mask_ratio", "max_det", "iou", "conf",
    "workers", "deterministic", "patience", "nms",
}


def check_pass_through(options: dict) -> None:
    """task_args.ultralytics: known training hyper-parameters with plain, finite values; one line otherwise."""
    clash = OWNED & set(options)
    if clash:
        raise UserError(f"task_args.ultralytics may not set {', '.join(sorted(clash))}: transferbench sets them "
                        f"from the suite's own fields (epochs, batch_size, lr, seeds, ...) and its results folder")
    for key, value in options.items():
        if key not in PASS_THROUGH:
            raise UserError(f"task_args.ultralytics.{key} is not a training hyper-parameter transferbench passes "
                            f"through (paths and output locations are transferbench's: its results folder); "
                            f"allowed: {', '.join(sorted(PASS_THROUGH))}")
        plain = isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))
        if not plain or (isinstance(value, str) and ("/" in value or len(value) > 32)):
            raise UserError(f"task_args.ultralytics.{key}: {value!r} is not a plain finite number, boolean or "
                            f"short word")


def job(spec, task, model_ref: str, work: Path, save_to: Optional[Path]) -> dict:
    """The run as a job: the budget's images written as an image list with its own data.yaml under `work`, the
    Ultralytics arguments the suite's hyper-parameters and the task's args (imgsz, ultralytics) map to, and what
    the trainer subclass needs to apply the mode. The launcher adds the devices and loader workers."""
    ref = resolve_model(model_ref)
    check_weights(spec.mode, ref, model_ref, spec.hyper)
    data = task.load_data(spec.dataset, model_ref)  # the image lists, bad label files left out
    size = sources.budget_size(len(data.train), spec.train_samples, spec.train_fraction)
    h = spec.hyper
    work.mkdir(parents=True, exist_ok=True)
    chosen = [data.train[i] for i in sources.subset_indices(len(data.train), spec.seed, size)]
    (work / "train.txt").write_text("\n".join(chosen) + "\n")
    (work / "val.txt").write_text("\n".join(data.eval) + "\n")
    (work / "data.yaml").write_text(yaml.safe_dump(
        {"path": str(work), "train": "train.txt", "val": "val.txt", "names": dict(enumerate(data.labels))}))
    epochs = int(h.epochs)
    overrides = {
        # no last.pt/best.pt (~30 MB each with optimizer state): transferbench reads neither (a stage saves
        # its own safetensors; `save_models: final` keeps one stripped last.pt under <results>/models/<run_id>)
        "save": False,
        **task.args.ultralytics,
        "model": str(work / "arch.yaml"), "data": str(work / "data.yaml"), "epochs": epochs,
        "batch": h.batch_size, "nbs": h.batch_size * h.grad_accum,  # no hidden accumulation up to 64
        "optimizer": "AdamW", "lr0": h.lr, "weight_decay": h.weight_decay,
        "warmup_epochs": h.warmup_ratio * epochs, "cos_lr": h.scheduler == "cosine", "imgsz": task.args.imgsz,
        "seed": spec.seed, "deterministic": True,
        "amp": {"no": False, "bf16": "bf16", "fp16": "fp16"}[h.mixed_precision],
        "project": str(work), "name": "ultralytics", "exist_ok": True, "plots": False, "val": True,
        "verbose": False, "patience": 10**6,
    }
    if h.max_seconds is not None:
        overrides["time"] = h.max_seconds / 3600
    if isinstance(ref.arch, dict):
        (work / "arch.yaml").write_text(yaml.safe_dump(ref.arch))
    else:  # a .pt: Ultralytics reads the architecture from the checkpoint itself
        overrides["model"] = ref.arch
    return {
        "overrides": overrides, "arch": ref.arch, "init": ref.init,
        "pretrained": get_mode(spec.mode, spec.hyper).pretrained,
        "mode": spec.mode, "hyper": spec.hyper.model_dump(mode="json"),
        "eval_every": max(1, math.ceil(h.eval_every - 1e-9)), "target": spec.target.value if spec.target else None,
        "n_train": size, "dataset": spec.dataset.source, "save_to": str(save_to) if save_to else None,
    }
