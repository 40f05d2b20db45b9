"""Pretrain stages: a run whose saved checkpoint other runs use as their model (`model: pretrain:NAME`).

A stage's checkpoint is keyed by its resolved spec (run_id): found in the cache, or shipped as package data
(transferbench/stages/, made by `transferbench stages --ship`), or trained once and cached.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import transferbench
from transferbench.cache import cache_dir
from transferbench.config import RunSpec

from .execute import execute, process_state

SHIPPED_STAGES = Path(transferbench.__file__).parent / "stages"


class StageFailed(RuntimeError):
    pass


def stage_dir(stage: RunSpec) -> Path:
    """Keyed by the stage's resolved spec: a changed stage trains anew, an unchanged one is reused."""
    return cache_dir() / "stages" / f"{stage.stage_name}-{stage.run_id}"


def shipped_stage(stage: RunSpec) -> Optional[Path]:
    """A stage checkpoint shipped as package data, stamped with the run_id of the spec that trained it: used
    only when that spec is unchanged."""
    path = SHIPPED_STAGES / f"{stage.stage_name}-{stage.run_id}"
    return path if (path / "stage_result.json").exists() else None


def ready_stage(stage: RunSpec) -> Optional[Path]:
    """The stage's finished checkpoint folder, in the cache or shipped, or None when it must train."""
    path = stage_dir(stage)
    return path if (path / "stage_result.json").exists() else shipped_stage(stage)


def ensure_stage(stage: RunSpec, rebuild: bool = False, price_override: Optional[float] = None, log=print) -> str:
    """The checkpoint folder of a pretrain stage, training it first when it is neither in the cache nor
    shipped (or when `rebuild`)."""
    path = stage_dir(stage)
    ready = None if rebuild else ready_stage(stage)
    if ready is not None:
        if ready != path:
            log(f"pretrain stage {stage.stage_name}: using the shipped checkpoint {ready} (--rebuild-stages retrains)")
        return str(ready)
    log(f"pretrain stage {stage.stage_name}: training {stage.model} on {stage.dataset.source} -> {path}")
    res = execute(stage, price_override, save_to=path, work_dir=path.parent / f"{path.name}.work")
    if res.status != "ok":
        raise StageFailed(f"pretrain stage '{stage.stage_name}' {res.status}: {res.error}")
    if process_state().is_main_process:
        (path / "stage_result.json").write_text(res.to_json() + "\n")  # written last: the stage is complete
    log(f"pretrain stage {stage.stage_name}: {res.metric_name}={res.metric:.4f} on its own eval split "
        f"({res.wall_seconds:.1f}s)")
    return str(path)
