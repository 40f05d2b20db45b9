"""YOLO model references for the Ultralytics loop: a .pt checkpoint, a model YAML (yolov8n.yaml) or a transferbench
detection checkpoint (a pretrain stage's output), resolved to an architecture and where its weights come from."""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import yaml

from transferbench.errors import UserError
from transferbench.modes import get_mode

from . import yolo_env


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
        found = model_yaml(ref)
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
def model_yaml(ref: str) -> Optional[str]:
    """The file Ultralytics' yaml_model_load reads for `ref`, found by its rules (P6 names renamed, the file
    itself, else its name under the ultralytics package, then the scale-free name: yolov8n.yaml -> yolov8.yaml;
    YOLOv5u names without the u) without importing ultralytics; None when it finds none or several."""
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


def check_weights(mode_name: str, ref: YoloRef, name: str, hyper=None) -> None:
    """The weights a mode starts from exist (or, for scratch, at least the architecture)."""
    pretrained = get_mode(mode_name, hyper).pretrained
    if pretrained and ref.init is None:
        raise UserError(f"mode {mode_name} needs pretrained weights, but '{name}' is an architecture only; "
                        f"use scratch, a .pt checkpoint or a pretrain stage")
    if (pretrained and ref.init.get("missing")) or ref.arch is None:
        raise missing_checkpoint(name)  # (arch None: scratch from a released .pt that is not on disk)


def missing_checkpoint(ref: str) -> UserError:
    return UserError(f"model '{ref}' is not on disk and cannot be downloaded here (offline); fetch it once where "
                     f"GitHub is reachable (e.g. `yolo predict model={ref}` or the Ultralytics release assets) and "
                     f"give its path, or use a pretrain stage")
