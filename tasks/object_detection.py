"""Task `object-detection`: YOLO-format data (a data.yaml, or `builtin:NAME` written as one), the budget's unit
(images) and the metrics. Models of the YOLO family train with Ultralytics' own loop (runners/train/ultralytics.py),
which resolves the model, maps the suite onto Ultralytics' trainer arguments and applies the mode.

Modes: scratch = the architecture from its YAML, random init; finetune = a checkpoint's weights, all train;
linear-probe = frozen backbone (neck + Detect train, as Ultralytics' `freeze`); lora = peft LoRA on the
backbone's Conv2d layers, neck + Detect train in full.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from transferbench import safe_yaml
from transferbench.builtin import materialize
from transferbench.errors import UserError

from . import Task, TaskData, register_task

IMAGE_SUFFIXES = {".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"}


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    imgsz: int = Field(64, ge=32, multiple_of=32)  # train/val picture size (YOLO strides need a multiple of 32)
    # further trainer arguments for Ultralytics' loop, e.g. {mosaic: 0.0, fliplr: 0.5} (which ones it takes: its
    # check, runners/train/yolo_job.py)
    ultralytics: dict[str, Any] = {}


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


@register_task
class ObjectDetection(Task):
    name = "object-detection"
    metric_name = "map50_95"
    metric_names = ("map50_95", "map50", "precision", "recall")
    label_metrics = False  # boxes, scored by Ultralytics
    Args = Args
    loops = {"yolo": "ultralytics"}

    @classmethod
    def model_family(cls, model: str) -> str:
        return "yolo"  # the only family it trains so far: Ultralytics' loop refuses what is not a YOLO model

    def warm_up(self, model: str) -> None:
        """Nothing: the metrics and the model are Ultralytics', which its loop warms up."""

    def load_data(self, dataset, model: str) -> TaskData:
        """The image lists (what budgets count); Ultralytics itself loads and augments the pictures."""
        data = load_yolo_data(dataset.source, dataset.eval_split)
        return TaskData(train=data.train, eval=data.val, collate=None, labels=data.names, identity=dataset.source)
