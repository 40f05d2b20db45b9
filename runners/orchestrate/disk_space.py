"""Free space, before anything trains: what the pending runs will write, estimated per artefact, against what each
filesystem has free. Refused only when clearly short (the estimate already exceeds the free space): a run that
trained and then could not save or record is lost work.

Artefacts and their estimates:
- store lines: RECORD_BYTES per run (a record with its curve, config and provenance is ~5 KB; twice that here);
- saved models (`save_models: final`): the starting model's weight files per run (full weights; a peft mode saves
  adapters, counted as nothing, and once per starting model the base its adapters reload on: hf_save.save_base);
- pretrain stages that will train: the starting model's weight files, once per stage, in the cache.
A model whose size cannot be known offline (a Hub id not cached, an architecture config) counts as nothing."""
from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

from transferbench import model_files
from transferbench.cache import cache_dir
from transferbench.checkpoints import WEIGHT_SUFFIXES
from transferbench.errors import UserError
from transferbench.modes import get_mode

from .plan import RunPlan

RECORD_BYTES = 10_000


def weight_bytes(model: str) -> int:
    """The bytes of a local checkpoint's weight files (a folder or one file); 0 when unknown."""
    try:
        path = Path(model_files.resolve(model)).expanduser()
        files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
        return sum(p.stat().st_size for p in files if p.suffix in WEIGHT_SUFFIXES)
    except (OSError, UserError):
        return 0


def needs(results_dir: Optional[Path], pending: list[RunPlan], stages: list[RunPlan]) -> dict[Path, dict[str, int]]:
    """{folder: {artefact: bytes}} the pending runs and the stages that will train are expected to write."""
    out: dict[Path, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if pending:
        out[results_dir]["store lines"] += RECORD_BYTES * len(pending)
    bases = set()  # starting models whose adapters' base is saved (once each)
    for plan in pending:
        spec = plan.spec
        if spec.hyper.save_models != "final":
            continue
        if not get_mode(spec.mode, spec.hyper).adapts:
            out[results_dir / "models"]["saved models"] += weight_bytes(spec.model_source)
        elif spec.model_source not in bases:
            bases.add(spec.model_source)
            out[results_dir / "models"]["saved models"] += weight_bytes(spec.model_source)
    for stage in stages:
        out[cache_dir() / "stages"]["pretrain stages"] += weight_bytes(stage.spec.model_source)
    return out


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_space(results_dir: Optional[Path], pending: list[RunPlan], stages: list[RunPlan],
                free: Optional[Callable[[Path], int]] = None) -> None:
    """One line naming the filesystem, what it must hold and what it has, when the estimate exceeds its free space.
    Folders on one filesystem are summed. `free(path)`: bytes free there (default shutil.disk_usage)."""
    free = free or (lambda p: shutil.disk_usage(p).free)
    by_device: dict[int, list] = defaultdict(list)
    for folder, artefacts in needs(results_dir, pending, stages).items():
        where = _existing(folder)
        try:
            by_device[where.stat().st_dev].append((folder, where, artefacts))
        except OSError:
            continue  # the writable check names an unreachable folder
    for entries in by_device.values():
        total = sum(sum(a.values()) for _, _, a in entries)
        have = free(entries[0][1])
        if total > have:
            parts = "; ".join(f"{name} {_size(n)} in {folder}" for folder, _, a in entries for name, n in a.items()
                              if n)
            raise UserError(f"not enough free space: the pending runs will write about {_size(total)} ({parts}) and "
                            f"{entries[0][1]} has {_size(have)} free; free space or point --results-dir / "
                            f"TRANSFERBENCH_CACHE elsewhere")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
