"""Pretrain stages: a run whose saved checkpoint other runs use as their model (`model: pretrain:NAME`). Found by
the stage's spec (its identity), trained from its plan.

A stage's checkpoint is keyed by its resolved spec (run_id): found in the cache, or shipped as package data
(transferbench/stages/, made by `transferbench stages --ship`), or trained once and cached.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Optional

import transferbench
from transferbench import checkpoints
from transferbench.cache import cache_dir
from transferbench.claims import Claim
from transferbench.config import RunSpec
from transferbench.errors import UserError

from ..signals import check_stop
from ..train.midrun import remove as remove_checkpoints


def execute(*args, **kwargs):  # .execute imports torch: imported on first use, so a dry run stays torch-free
    from .execute import execute as execute_run

    return execute_run(*args, **kwargs)


def process_state():
    from .execute import process_state as state

    return state()

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


def usable_stage(stage: RunSpec, log=print) -> Optional[Path]:
    """`ready_stage`, verified: a corrupt cached checkpoint is left in place (a run may be reading it) and None
    is returned, so it is rebuilt; a corrupt shipped one is a UserError naming the file and the fix."""
    ready = ready_stage(stage)
    if ready is None:
        return None
    problem = checkpoints.problem(ready)
    if problem is None:
        return ready
    if ready.parent == SHIPPED_STAGES:
        raise UserError(f"pretrain stage '{stage.stage_name}': the shipped checkpoint is corrupt ({problem}); "
                        f"run with --rebuild-stages to retrain it (or reinstall transferbench)")
    if (ready, problem) not in _SAID:  # preflight, the space check and the build all ask: said once
        _SAID.add((ready, problem))
        log(f"pretrain stage {stage.stage_name}: the cached checkpoint is corrupt ({problem}); rebuilding it")
    return None


_SAID: set = set()


def ensure_stage(plan, rebuild: bool = False, log=print) -> str:
    """The checkpoint folder of a pretrain stage, training it first when it is neither in the cache nor
    shipped (or when `rebuild`, or when the cached one is corrupt).

    Concurrency: the build is claimed (transferbench/claims.py); an invocation that finds the claim held waits
    for it and then reuses what the claimer built. Atomicity: a build goes into a new version folder
    (`NAME-ID.vTIME`), is loaded back once, and only then becomes the stage by replacing the `NAME-ID` symlink
    in one rename. The folder returned is the resolved version, which is never deleted: runs that are using an
    older version (a `--rebuild` by another invocation) keep reading it."""
    stage = plan.spec
    path = stage_dir(stage)
    ready = None if rebuild else usable_stage(stage, log)
    if ready is not None:
        if ready != path:
            log(f"pretrain stage {stage.stage_name}: using the shipped checkpoint {ready} (--rebuild-stages retrains)")
        return str(ready.resolve())
    state = process_state()
    claim = Claim(path.parent / f"{path.name}.claim") if state.num_processes == 1 else None
    waited = False
    while claim is not None and not claim.try_acquire():
        if not waited:
            log(f"pretrain stage {stage.stage_name}: being built by {claim.describe()}; waiting to reuse it")
        waited = True
        check_stop()
        time.sleep(0.5)
    try:
        if waited:  # the invocation we waited for has built it (even when we were asked to rebuild)
            ready = usable_stage(stage, log)
            if ready is not None:
                log(f"pretrain stage {stage.stage_name}: reusing the checkpoint another invocation built")
                return str(ready.resolve())
        return _build(plan, path, log)
    finally:
        if claim is not None:
            claim.release()


def _build(plan, path: Path, log) -> str:
    stage = plan.spec
    version = path.parent / f"{path.name}.v{time.time_ns()}"
    log(f"pretrain stage {stage.stage_name}: training {stage.model} on {stage.dataset.source} -> {path}")
    try:
        res = execute(plan, save_to=version, work_dir=path.parent / f"{path.name}.work")
        remove_checkpoints(path.parent / f"{path.name}.work")  # trained (or failed): nothing left to resume
    except BaseException:  # Ctrl-C/SIGTERM: no half-built version folder is left behind
        shutil.rmtree(version, ignore_errors=True)
        raise
    if res.status != "ok":
        shutil.rmtree(version, ignore_errors=True)
        raise StageFailed(f"pretrain stage '{stage.stage_name}' {res.status}: {res.error}")
    problem = None
    if process_state().is_main_process:
        try:
            (version / "stage_result.json").write_text(res.to_json() + "\n")  # written last: the stage is complete
        except OSError as err:  # disk full, a file-size limit: the stage is not complete, and says why
            shutil.rmtree(version, ignore_errors=True)
            raise StageFailed(f"pretrain stage '{stage.stage_name}' trained but its checkpoint could not be "
                              f"written to {version}: {err.strerror or err}; free space, then rerun") from None
        problem = checkpoints.problem(version)  # loaded back once before anyone may use it
        if problem:
            shutil.rmtree(version, ignore_errors=True)
        else:
            _swap_in(version, path)
    process_state().wait_for_everyone()  # the others return the stage only once it is in place
    if problem:
        raise StageFailed(f"pretrain stage '{stage.stage_name}' saved a checkpoint that does not load back ({problem})")
    log(f"pretrain stage {stage.stage_name}: {res.metric_name}={res.metric:.4f} on its own eval split "
        f"({res.wall_seconds:.1f}s)")
    return str(path.resolve())


def _swap_in(version: Path, path: Path) -> None:
    """Make `path` (a symlink) name `version`, in one rename; a real folder there (an older layout) is first
    renamed aside, never deleted (a run may be reading it)."""
    link = path.parent / f".{path.name}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(version.name, link)
    try:
        os.replace(link, path)
    except OSError:  # `path` is a real folder
        os.replace(path, path.parent / f"{path.name}.v0-{time.time_ns()}")
        os.replace(link, path)
