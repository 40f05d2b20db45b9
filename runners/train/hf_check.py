"""What the Accelerate loop (runners/train/hf_loop.py) cannot train as asked, found before anything trains. Apart from
the loop because the loop imports torch and a dry run (`transferbench run --dry-run`) checks without it."""
from __future__ import annotations

from transferbench.errors import UserError
from transferbench.modes import apply, get_mode
from transferbench.tasks import get_task

_FITTED: set = set()  # (task, task_args, model, mode and its settings) already shown to fit


def check(spec, num_processes: int, dry_run: bool) -> None:
    """What this loop cannot train as asked, found before anything trains: an uneven batch split over
    `num_processes`, options that do not combine. A dry run imports no torch, so a mode's fit (check_fit builds the
    model) is left to the real run's preflight."""
    spec.hyper.per_device_batch(num_processes)
    if spec.hyper.cached_features and not get_mode(spec.mode, spec.hyper).head_only:
        raise UserError(f"cached_features applies to a mode that trains only the head (linear-probe), not "
                        f"{spec.mode}: the backbone's features change while it trains; remove it from that mode")
    if spec.hyper.early_stopping and spec.hyper.cached_features:
        raise UserError("early_stopping and cached_features do not combine yet: the probe on cached features has "
                        "no validation features; drop one of them")
    if spec.hyper.cached_features and getattr(get_task(spec.task)(spec.task_args), "augments", False):
        raise UserError("cached_features and task_args.augment do not combine: features are computed once per "
                        "example, from unaugmented images; drop one of them (a probe on augmented images trains "
                        "without cached_features)")
    if not dry_run:
        check_fit(spec)
    check_saving(spec)  # a dry run too: only a suite that saves pays for building the model


_SAVES: set = set()  # (task, task_args, model) whose model was shown to save


def check_saving(spec) -> None:
    """`save_models: final` saves a trained model the task's way (Task.save_checkpoint; transformers'
    save_pretrained by default) after training: a model that cannot is one line now, not a failed row per run
    after it trained. A peft mode saves its adapters (peft's save_pretrained, any model); a task that overrides
    save_checkpoint saves its own way."""
    from transferbench.tasks import Task

    task_cls = get_task(spec.task)
    if spec.hyper.save_models != "final" or get_mode(spec.mode, spec.hyper).adapts or \
            task_cls.save_checkpoint is not Task.save_checkpoint:
        return
    key = (spec.task, str(spec.task_args), spec.model_source)
    if key in _SAVES:
        return
    try:
        model = task_cls(spec.task_args).build_model(spec.model_source, ["a", "b"], pretrained=False)
    except Exception:  # noqa: BLE001 - loading the model is preflight's own check; its run reports anything else
        return
    if not callable(getattr(model, "save_pretrained", None)):
        raise UserError(f"save_models: final saves the trained model with save_pretrained, which the {spec.task} "
                        f"model ({type(model).__name__}) does not have: set save_models: none, or give the task a "
                        f"save_checkpoint")
    _SAVES.add(key)


def check_fit(spec) -> None:
    """A mode that must fit the model's structure (partial's blocks, a peft method's target layers and their types)
    is applied once to the model built from its config (random init: no weights read), so a misfit is one line
    before anything trains instead of a failed run per seed. Only such modes pay this (a model built per model)."""
    mode = get_mode(spec.mode, spec.hyper)
    if not mode.checked_on_model:
        return
    model_ref = spec.model_source
    key = (spec.task, str(spec.task_args), model_ref, spec.mode,
           spec.hyper.model_dump_json(include={"peft", "partial_blocks", "lora_targets"}))
    if key in _FITTED:
        return
    task = get_task(spec.task)(spec.task_args)
    try:
        model = task.build_model(model_ref, ["a", "b"], pretrained=False)
    except Exception:  # noqa: BLE001 - loading the model is preflight's own check; its run reports anything else
        return
    apply(mode, model, task, spec.hyper)
    _FITTED.add(key)
