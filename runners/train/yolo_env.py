"""Ultralytics, offline and quiet. Import `ultralytics` only through `load()`: the environment it reads at
import time (network probe, settings folder, rank, verbosity) must be set first."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from transferbench.cache import cache_dir


def config_dir() -> Path:
    """A project-local YOLO_CONFIG_DIR (settings.json, fonts), never the user's home."""
    return cache_dir() / "ultralytics"


def prepare_environment(env: dict = os.environ) -> None:
    """Set what Ultralytics reads at import: no DNS probe (YOLO_OFFLINE), settings under our cache, quiet
    logs. A user's own YOLO_OFFLINE=0 / YOLO_VERBOSE=1 wins (e.g. to let it fetch a released .pt)."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_CONFIG_DIR", str(folder))
    env.setdefault("YOLO_VERBOSE", "False")
    env.setdefault("YOLO_AUTOINSTALL", "False")
    # check_font() downloads Arial.ttf when it is not in the config folder: give it a shipped font instead
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    user_dir = folder / "Ultralytics"  # Ultralytics' USER_CONFIG_DIR under YOLO_CONFIG_DIR
    user_dir.mkdir(exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (user_dir / name).exists() and font.exists():
            shutil.copyfile(font, user_dir / name)


def load():
    """The ultralytics module, imported in a prepared environment."""
    prepare_environment()
    import ultralytics
    from ultralytics.utils import SETTINGS

    folder = config_dir()
    wanted = {"sync": False,  # no analytics events
              "datasets_dir": str(folder / "datasets"), "weights_dir": str(folder / "weights"),
              "runs_dir": str(folder / "runs")}  # nothing lands in the current directory by default
    # its logger integrations switch on when their package is installed (mlflow, comet, clearml, dvc, raytune:
    # on by default); trackers are the suite's `report_to` (runners/train/trackers.py), so they stay off
    wanted.update({k: False for k in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
                   if k in SETTINGS})
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        SETTINGS.update(wanted)
    return ultralytics
