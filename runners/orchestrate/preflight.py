"""Preflight: everything that can be checked without training, before the first run trains, and exactly what
`run --dry-run` does (`before_training`): inputs, models, data, budgets, the learning-rate search's pool, saving,
checkpoints, writable outputs of the right kind, free space; and the warm-up of what every run needs, so one-time
costs stay out of the first run's timed fields. A run that trained is never lost to a check that could have run
first."""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import time
from pathlib import Path

from transferbench import checkpoints, metrics, sources
from transferbench.cache import cache_dir
from transferbench.errors import UserError
from transferbench.tasks import task_for

from ..train import lr_search, plateau
from ..train.loops import get_loop
from .plan import RunPlan


def before_training(results_dir: Path, pending: list[RunPlan], rebuild_stages: bool = False, num_processes: int = 1,
                    dry_run: bool = False, main_process: bool = True) -> None:
    """The one preflight: `run` (before its first run trains) and `run --dry-run` call this and nothing else.
    The outputs are checked by the main process (the one writer); the inputs by every process."""
    if main_process and pending:
        check_outputs(results_dir, pending, rebuild_stages)
    preflight(pending, rebuild_stages, num_processes, dry_run)


def check_stages(stages: list[RunPlan], rebuild: bool = False) -> None:
    """`transferbench stages`: the stages that will train checked like runs, their cache folder writable, with
    room for their checkpoints."""
    from .disk_space import check_space
    from .stages import usable_stage

    training = [p for p in stages if rebuild or not usable_stage(p.spec)]
    if training:
        _probe(cache_dir(), ["stages"], keep=False)
        for stage in training:
            _probe(cache_dir() / "stages", [_stage_name(stage.spec)], keep=False)
        check_space(None, [], training)
    preflight(training, rebuild)


def _stage_name(stage) -> str:
    return f"{stage.stage_name}-{stage.run_id}.v{time.time_ns()}.work.claim"  # the longest name a stage creates


def check_outputs(results_dir: Path, pending: list[RunPlan], rebuild_stages: bool = False) -> None:
    """Every folder the pending runs write to is a writable folder (nothing is left behind by the check), and
    each filesystem has room for what they will write."""
    from .disk_space import check_space
    from .stages import usable_stage

    check_writable(results_dir, pending, keep=False)
    training = {p.stage.spec.stage_name: p.stage for p in pending
                if p.stage and (rebuild_stages or not usable_stage(p.stage.spec))}
    check_space(results_dir, pending, list(training.values()))


def preflight(plans: list[RunPlan], rebuild_stages: bool = False, num_processes: int = 1,
              dry_run: bool = False) -> None:
    """Fail fast, before any training, on bad input: bad task_args, unloadable dataset or model, a model of the
    wrong kind, a missing column, a budget larger than the data, a target on a metric the task does not compute,
    what the run's loop cannot train. A run on a pretrain stage is checked with the stage's starting model (same
    architecture and preprocessing); the stage itself is checked like a run when it will train (a cached or
    shipped stage will not: loading its large source set would only cost time).

    A dry run imports no torch: the loops' checks are told so (the hf loop then builds no model to check a mode's
    fit: the real run's preflight does), and the data are checked by Task.check_data instead of loaded (a real run
    loads them here, so its runs find them prepared)."""
    from .stages import usable_stage

    loaded: dict[tuple, int] = {}  # (task, dataset, model, task_args) -> examples in its training split
    metrics_checked: list = []  # the named metrics checked (config.Metric: compared by value)
    stages = [p.stage for p in plans if p.stage and (rebuild_stages or not usable_stage(p.stage.spec))]
    for plan in stages + plans:
        spec = plan.spec
        model = spec.model_source
        task = task_for(spec)
        where = (f"pretrain stage '{spec.stage_name}'" if spec.stage_name else f"{spec.task} on {spec.dataset.source}"
                 f" with {model} ({spec.mode})")
        _about(where, get_loop(plan.loop).check, spec, num_processes, dry_run)
        key = (spec.task, spec.dataset.model_dump_json(), model, str(spec.task_args))
        if key not in loaded:
            check_checkpoint(model)  # a truncated weights/config file is named before anything tries to load it
            task.check_model(model)  # the model and the data must load (a model another loop builds: its loop's)
            loaded[key] = task.check_data(spec.dataset, model) if dry_run else \
                len(task.load_data(spec.dataset, model).train)
        _budget(plan, where, loaded[key])
        if spec.metric is not None and spec.metric not in metrics_checked:  # a dry run loads no module (torch)
            metrics.check(spec.metric, f"{spec.task} on {spec.dataset.source}: metric", load_it=not dry_run)
            metrics_checked.append(spec.metric)
        if spec.target and spec.target.metric not in task.metric_names:
            raise UserError(f"target metric '{spec.target.metric}' is not computed by {spec.task} "
                            f"(it computes {', '.join(task.metric_names)})")


def _budget(plan: RunPlan, where: str, available: int) -> None:
    """The plan's budget against the data: it fits the pool left after early stopping's carve, it splits into a
    fit and a validation part where a plateau phase or a learning-rate search validates inside it, and a search
    that scores beyond it finds its examples left in the pool."""
    spec = plan.spec
    if spec.hyper.early_stopping:  # the validation carve leaves the rest for the budgets
        available = len(_about(where, sources.validation_split, available,
                               spec.hyper.early_stopping.validation_samples)[1])
    size = _about(where, sources.budget_size, available, spec.train_samples, spec.train_fraction)
    if spec.hyper.schedule == "plateau":
        _about(where, plateau.check_budget, size, spec.hyper.plateau)
    elif plan.search and plan.search.rule.validation == "budget":  # the search splits the budget the same way
        _about(where, plateau.check_budget, size, spec.hyper.plateau, f"lr: {plan.search.kind}")
    if plan.search:
        _about(where, lr_search.check_pool, plan.search, size, available)


def warm_up(plans: list[RunPlan]) -> None:
    """Pay the one-time costs of the pending runs before the first one starts its clock, so they land in the
    suite's own timing, never in a run's setup/train/eval seconds or cost (the first run is scratch seed 0:
    it would look costlier than its seeds 1-2): each loop's and mode's lazy imports, and once per (task,
    task_args, model) the task's metric modules and model code (Task.warm_up). A warm-up that fails changes
    nothing: the run itself then reports the error."""
    from transferbench.modes import get_mode

    done = set()  # what has been warmed: ("mode", name) and (task, task_args, model)
    for plan in plans:
        spec = plan.spec
        for key in (("mode", spec.mode), (spec.task, str(spec.task_args), spec.model_source, str(spec.metric))):
            if key in done:
                continue
            done.add(key)
            try:
                if key[0] == "mode":
                    for module in get_mode(spec.mode, spec.hyper).imports:
                        importlib.import_module(module)
                else:
                    get_loop(plan.loop).warm_up()
                    task_for(spec).warm_up(spec.model_source)
            except Exception:  # noqa: BLE001, S112 - the run reports it, with its own context
                continue


def check_checkpoint(model: str) -> None:
    """A local model (folder or file) whose weights or config are truncated or corrupt: one line naming the file."""
    if model.startswith(("pretrain:", "config:")) or not Path(model).expanduser().exists():
        return
    problem = checkpoints.problem(Path(model).expanduser())
    if problem:
        raise UserError(f"model {model}: corrupt checkpoint file {problem}; save or download it again")


def check_writable(results_dir: Path, plans: list[RunPlan], keep: bool = True) -> None:
    """Prove, before anything trains, that every folder a run writes to takes a file (create + fsync + remove a
    probe), that the store can be appended to, and that the names the runs will create fit the filesystem. With
    keep=False the folders this check had to create are removed again (a refused or dry run leaves nothing
    behind; a run creates them when it first writes there)."""
    store = results_dir / "runs.jsonl"
    if store.is_symlink() and not store.exists():
        raise UserError(f"results store {store} is a symlink to {os.readlink(store)}, which does not exist; remove "
                        f"it or point it at a file")
    if store.exists() and not store.is_file():
        raise UserError(f"results store {store} is not a file; give --results-dir a folder of your own")
    folders = {results_dir: [f"{p.run_id}.claim" for p in plans[:1]] + ["suite_timing.jsonl"],
               results_dir / "work": [p.run_id for p in plans[:1]], cache_dir(): ["builtin"]}
    saving = [p.run_id for p in plans if p.spec.hyper.save_models == "final"]
    if saving:  # save_models: final writes <results>/models/<run_id> after training: proved writable now
        folders[results_dir / "models"] = saving[:1]
    if any(p.spec.hyper.report_to for p in plans):  # trackers write <results>/trackers while a run trains
        folders[results_dir / "trackers"] = []
    for stage in {p.spec.stage.stage_name: p.spec.stage for p in plans if p.stage}.values():
        folders.setdefault(cache_dir() / "stages", []).append(_stage_name(stage))
    for folder, names in folders.items():
        _probe(folder, names, keep)
    if store.exists():
        try:
            os.close(os.open(store, os.O_WRONLY | os.O_APPEND))
        except OSError as err:
            raise UserError(f"results store {store} is not writable ({err.strerror}); fix its permissions or give "
                            f"another --results-dir") from None


def _probe(folder: Path, names: list[str], keep: bool) -> None:
    created, p = [], folder
    while not p.exists() and not p.is_symlink() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} is a file, not a folder; give --results-dir a folder of your own")
        for attempt in range(3):  # a concurrent invocation's probe may remove a folder it created meanwhile
            try:
                _write_probe(folder, names)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
    except OSError as err:
        what = ("the filesystem cannot hold this name" if err.errno == errno.ENAMETOOLONG else
                f"it is not writable ({err.strerror})")
        raise UserError(f"{folder}: {what}; give another --results-dir (or TRANSFERBENCH_CACHE for stages)") from None
    finally:
        if not keep:
            for c in created:
                with contextlib.suppress(OSError):
                    c.rmdir()


def _write_probe(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    limit = os.pathconf(folder, "PC_NAME_MAX")
    long = [n for n in names if len(os.fsencode(n)) > limit]
    if long:
        raise UserError(f"{folder}: the filesystem cannot hold the name '{long[0]}' ({len(os.fsencode(long[0]))} "
                        f"bytes > {limit}); use a shorter suite or stage name")
    probe = folder / f".write-probe-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"probe\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def _about(where: str, check, *args):
    """`check(*args)`, its UserError prefixed with the benchmark it is about."""
    try:
        return check(*args)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
