"""Task `object-detection`: Ultralytics YOLO, which owns its training loop (`loop = "ultralytics"`).

This module is the task's side: data (a YOLO data.yaml, or `builtin:NAME` written as one), the budget (a
seeded subset written as an image list), model references, what Ultralytics cannot train as asked
(check_run), and the run as a job: the suite's hyper-parameters mapped onto Ultralytics' trainer arguments.
How the job is launched (devices, a child process under `accelerate launch`) and the trainer subclass that
applies the mode live in runners/ (ultralytics.py, yolo_fit.py).

Modes: scratch = the architecture from its YAML, random init; finetune = a checkpoint's weights, all train;
linear-probe = frozen backbone (neck + Detect train, as Ultralytics' `freeze`); lora = peft LoRA on the
backbone's Conv2d layers, neck + Detect train in full.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from transferbench import safe_yaml, sources
from transferbench.builtin import materialize
from transferbench.errors import UserError
from transferbench.modes import get_mode

from . import Task, TaskData, register_task, yolo_env

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}
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


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    imgsz: int = Field(64, ge=32, multiple_of=32)  # train/val picture size (YOLO strides need a multiple of 32)
    ultralytics: dict[str, Any] = {}  # further trainer arguments, e.g. {mosaic: 0.0, fliplr: 0.5}


@dataclass(frozen=True)
class YoloData:
    """A validated detection dataset: image lists per split (bad label files already left out)."""

    yaml_file: Path
    names: list[str]
    train: list[str]
    val: list[str]


def _images(entry, root: Path, key: str, yaml_file: Path) -> list[str]:
    paths = entry if isinstance(entry, list) else [entry]
    out = []
    for p in paths:
        path = Path(p) if Path(p).is_absolute() else root / p
        if path.is_dir():
            out += sorted(str(f) for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix == ".txt" and path.is_file():
            for line in path.read_text().split():
                f = Path(line) if Path(line).is_absolute() else path.parent / line
                out.append(str(f))
        else:
            raise UserError(f"{yaml_file}: '{key}: {p}' -> {path} does not exist; fix the path (relative paths are "
                            f"read from the 'path' key, else from the yaml's folder)")
    return out


def _label_problem(image: str, nc: int) -> Optional[str]:
    """Why an image's YOLO label file is unusable, or None (a missing label file = a background image)."""
    parts = image.rsplit(f"{os.sep}images{os.sep}", 1)
    label = Path(f"{os.sep}labels{os.sep}".join(parts)).with_suffix(".txt") if len(parts) == 2 else None
    if label is None or not label.exists():
        return None
    for n, line in enumerate(label.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls, coords = float(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            return f"{label}:{n}: not numbers"
        if not all(math.isfinite(v) for v in [cls, *coords]):
            return f"{label}:{n}: not finite numbers ({line.strip()[:60]})"
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            return f"{label}:{n}: expected 'class cx cy w h' (or a polygon), got {len(fields)} fields"
        if cls != int(cls) or not 0 <= cls < nc:
            return f"{label}:{n}: class id {fields[0]} is outside 0..{nc - 1}"
        if any(not 0 <= v <= 1 for v in coords):
            return f"{label}:{n}: coordinates must be normalised to 0..1"
    return None


@lru_cache(maxsize=None)
def load_yolo_data(source: str, eval_split: Optional[str]) -> YoloData:
    """Read and check a data.yaml (or `builtin:NAME`, or a folder holding data.yaml); once per suite (preflight
    and every run of the dataset share it, and bad label files are named once)."""
    if source.startswith("builtin:"):
        yaml_file = materialize(source[len("builtin:"):]) / "data.yaml"
        if not yaml_file.exists():
            raise UserError(f"'{source}' is not a detection dataset (no data.yaml); see `transferbench list`")
    elif source.startswith("hub:"):
        raise UserError(f"object-detection reads a YOLO data.yaml (or builtin:NAME), not '{source}'; export the "
                        f"dataset in YOLO format and give the path of its data.yaml")
    else:
        yaml_file = Path(source) / "data.yaml" if Path(source).is_dir() else Path(source)
        if not yaml_file.is_file():
            raise UserError(f"dataset '{source}' not found: give a YOLO data.yaml, a folder holding one, or "
                            f"builtin:NAME")
    try:
        spec = safe_yaml.load(yaml_file.read_text(), str(yaml_file)) or {}
    except UnicodeDecodeError:
        raise UserError(f"{yaml_file}: not valid YAML (not UTF-8 text)") from None
    if not isinstance(spec, dict):
        raise UserError(f"{yaml_file}: a YOLO data.yaml must be a mapping with 'names', 'train' and 'val'")
    names = spec.get("names")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names)]
    if not isinstance(names, list) or not names:
        raise UserError(f"{yaml_file}: needs 'names' (a list, or a dict of class id -> name)")
    root = Path(spec.get("path") or yaml_file.parent)
    if not root.is_absolute():
        root = root if root.exists() else yaml_file.parent / root
    split = eval_split or "val"
    for key in ("train", split):
        if key not in spec:
            raise UserError(f"{yaml_file}: no '{key}' entry (the {'training' if key == 'train' else 'eval'} images)")
    splits = {key: _images(spec[key], root, key, yaml_file) for key in ("train", split)}
    bad = {}
    for key, images in splits.items():
        problems = {img: _label_problem(img, len(names)) for img in images}
        bad.update({img: why for img, why in problems.items() if why})
        splits[key] = [img for img in images if img not in bad]
        if not splits[key]:
            raise UserError(f"{yaml_file}: the '{key}' split has no usable images"
                            + (f" ({len(images)} with bad labels, e.g. {next(iter(bad.values()))})" if images else ""))
    if bad:
        shown = "; ".join(list(bad.values())[:5])
        warnings.warn(f"{yaml_file}: left out {len(bad)} image(s) with bad label files: {shown}"
                      + (" ..." if len(bad) > 5 else ""), stacklevel=2)
    return YoloData(yaml_file, names, splits["train"], splits[split])


@dataclass(frozen=True)
class YoloRef:
    """A model reference resolved: the architecture (a YAML name/path or a dict) and where weights come from."""

    arch: Any
    init: Optional[dict]  # {"kind": "pt", "path"} or {"kind": "stage", "path", "arch", "labels"}; None: no weights


def resolve_model(ref: str, parse: bool = True) -> YoloRef:
    """parse=False (a check): a model YAML is found as Ultralytics finds it and read as YAML, not parsed by
    Ultralytics (whose import imports torch); its `arch` is then the file's path."""
    path = Path(ref)
    if path.is_dir():  # a transferbench detection checkpoint (a pretrain stage's output)
        weights, arch_file = path / "model.safetensors", path / "arch.json"
        if not (weights.exists() and arch_file.exists()):
            raise UserError(f"model '{ref}': a folder must hold model.safetensors + arch.json + labels.json "
                            f"(a transferbench detection checkpoint)")
        arch = json.loads(arch_file.read_text())
        return YoloRef(arch, {"kind": "stage", "path": str(weights), "arch": arch,
                              "labels": json.loads((path / "labels.json").read_text())})
    if path.suffix in {".yaml", ".yml"} and not parse:
        found = _model_yaml(ref)
        if found is None:
            raise UserError(f"model '{ref}': no such YOLO model YAML (a local file or one Ultralytics ships, e.g. "
                            f"yolov8n.yaml, yolo11n.yaml)")
        try:
            arch = yaml.safe_load(Path(found).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise UserError(f"model '{ref}': cannot read {found}: {str(err).splitlines()[0]}") from None
        if not isinstance(arch, dict) or "backbone" not in arch or "head" not in arch:
            raise UserError(f"model '{ref}': {found} is not a YOLO model YAML (it needs 'backbone' and 'head')")
        return YoloRef(found, None)
    if path.suffix in {".yaml", ".yml"}:
        yolo_env.load()
        from ultralytics.nn.tasks import yaml_model_load

        try:
            return YoloRef(yaml_model_load(ref), None)
        except FileNotFoundError:
            raise UserError(f"model '{ref}': no such YOLO model YAML (a local file or one Ultralytics ships, e.g. "
                            f"yolov8n.yaml, yolo11n.yaml)") from None
    if path.suffix == ".pt":
        if path.is_file():
            return YoloRef(str(path), {"kind": "pt", "path": str(path)})
        arch = resolve_model(path.with_suffix(".yaml").name, parse).arch if "/" not in ref else None
        return YoloRef(arch, {"kind": "pt", "path": ref, "missing": True})
    raise UserError(f"model '{ref}' is not a YOLO model: give a .pt checkpoint, a model YAML (yolov8n.yaml) or a "
                    f"pretrain stage")


@lru_cache(maxsize=None)
def _model_yaml(ref: str) -> Optional[str]:
    """The file Ultralytics' yaml_model_load reads for `ref`, found by its rules (P6 names renamed, the file
    itself, else its name under the ultralytics package, then the scale-free name: yolov8n.yaml -> yolov8.yaml;
    YOLOv5u names without the u) without importing ultralytics; None when it finds none or several."""
    import glob
    import importlib.util
    import re

    path = Path(ref)
    if path.stem in (f"yolov{d}{x}6" for x in "nsmlx" for d in (5, 8)):
        path = path.with_name(re.sub(r"(\d+)([nslmx])6(.+)?$", r"\1\2-p6\3", path.stem) + path.suffix)
    spec = importlib.util.find_spec("ultralytics")
    root = Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None
    for candidate in (str(path), re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", str(path))):
        if ("yolov3" in candidate or "yolov5" in candidate) and "u.yaml" in candidate:
            candidate = candidate.replace("u.yaml", ".yaml")
        if os.path.exists(candidate):
            return candidate
        if root is not None:
            found = glob.glob(str(root / "**" / candidate), recursive=True) or glob.glob(str(root.parent / candidate))
            if found:
                return found[0] if len(found) == 1 or candidate == str(path) else None
    return None


def _check_weights(mode_name: str, ref: YoloRef, name: str, hyper=None) -> None:
    """The weights a mode starts from exist (or, for scratch, at least the architecture)."""
    pretrained = get_mode(mode_name, hyper).pretrained
    if pretrained and ref.init is None:
        raise UserError(f"mode {mode_name} needs pretrained weights, but '{name}' is an architecture only; "
                        f"use scratch, a .pt checkpoint or a pretrain stage")
    if (pretrained and ref.init.get("missing")) or ref.arch is None:
        raise _missing_checkpoint(name)  # (arch None: scratch from a released .pt that is not on disk)


def _missing_checkpoint(ref: str) -> UserError:
    return UserError(f"model '{ref}' is not on disk and cannot be downloaded here (offline); fetch it once where "
                     f"GitHub is reachable (e.g. `yolo predict model={ref}` or the Ultralytics release assets) and "
                     f"give its path, or use a pretrain stage")


@register_task
class ObjectDetection(Task):
    name = "object-detection"
    metric_name = "map50_95"
    metric_names = ("map50_95", "map50", "precision", "recall")
    Args = Args
    loop = "ultralytics"

    def check_model(self, model: str) -> None:
        resolve_model(model, parse=False)

    def warm_up(self, model: str) -> None:
        """Ultralytics' import (its trainer, validator and model code): metrics are its own."""
        yolo_env.load()
        import ultralytics.models.yolo.detect  # noqa: F401

    def load_data(self, dataset, model: str) -> TaskData:
        """The image lists (what budgets count); Ultralytics itself loads and augments the pictures."""
        data = load_yolo_data(dataset.source, dataset.eval_split)
        return TaskData(train=data.train, eval=data.val, collate=None, labels=data.names, identity=dataset.source)

    def check_run(self, spec) -> None:
        """What Ultralytics' loop cannot do as asked, and weights a mode needs but the model lacks."""
        h = spec.hyper
        if h.max_steps is not None:
            raise UserError("max_steps is not supported by Ultralytics' loop; use epochs or "
                            "max_seconds")
        if h.epochs != int(h.epochs):
            raise UserError(f"epochs must be a whole number (got {h.epochs})")
        check_pass_through(self.args.ultralytics)
        if spec.stage is None:  # a stage's checkpoint exists only once it has trained: checked when used
            _check_weights(spec.mode, resolve_model(spec.model, parse=False), spec.model, spec.hyper)

    def job(self, spec, model_ref: str, work: Path, save_to: Optional[Path]) -> dict:
        """The run as a plain, JSON-able job for runners/yolo_fit: the budget's images written as an image list
        with its own data.yaml under `work`, the Ultralytics arguments the suite's hyper-parameters map to, and
        what the trainer subclass needs to apply the mode. The launcher adds the devices and loader workers."""
        ref = resolve_model(model_ref)
        _check_weights(spec.mode, ref, model_ref, spec.hyper)
        data = load_yolo_data(spec.dataset.source, spec.dataset.eval_split)
        size = sources.budget_size(len(data.train), spec.train_samples, spec.train_fraction)
        h = spec.hyper
        work.mkdir(parents=True, exist_ok=True)
        chosen = [data.train[i] for i in sources.subset_indices(len(data.train), spec.seed, size)]
        (work / "train.txt").write_text("\n".join(chosen) + "\n")
        (work / "val.txt").write_text("\n".join(data.val) + "\n")
        (work / "data.yaml").write_text(yaml.safe_dump(
            {"path": str(work), "train": "train.txt", "val": "val.txt", "names": dict(enumerate(data.names))}))
        epochs = int(h.epochs)
        overrides = {
            # no last.pt/best.pt (~30 MB each with optimizer state): transferbench reads neither (a stage saves
            # its own safetensors; `save_models: final` keeps one stripped last.pt under <results>/models/<run_id>)
            "save": False,
            **self.args.ultralytics,
            "model": str(work / "arch.yaml"), "data": str(work / "data.yaml"), "epochs": epochs,
            "batch": h.batch_size, "nbs": h.batch_size * h.grad_accum,  # no hidden accumulation up to 64
            "optimizer": "AdamW", "lr0": h.lr, "weight_decay": h.weight_decay,
            "warmup_epochs": h.warmup_ratio * epochs, "cos_lr": h.scheduler == "cosine", "imgsz": self.args.imgsz,
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

