"""Modes: how a model is initialised and which of its parameters train.

A mode sees only an `nn.Module`, the names of its head modules and the LoRA target patterns, all given by
the task, so it never branches on task type. The task builds the model (pretrained weights, or the same
config randomly initialised when `mode.pretrained` is False); the mode then decides what trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .errors import UserError, did_you_mean
from .lazy import lazy

if TYPE_CHECKING:
    from torch import nn
else:
    nn = lazy("torch.nn")  # the registry (`transferbench list`) needs no torch


@dataclass(frozen=True)
class Mode:
    name: str
    pretrained: bool  # load the checkpoint's weights; False = same architecture, random init
    default_lr: float  # used when the suite sets no lr for this mode
    summary: str
    prepare: Callable[[nn.Module, list[str], list[str], object], nn.Module]
    head_only: bool = False  # only the head trains: it can train on cached features of the frozen backbone
    imports: tuple[str, ...] = ()  # modules its `prepare` imports: the suite imports them before the first run


MODES: dict[str, Mode] = {}


def register_mode(mode: Mode) -> Mode:
    MODES[mode.name] = mode
    return mode


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise UserError(f"unknown mode '{name}'{did_you_mean(name, MODES)}")
    return MODES[name]


def find_head(model: nn.Module) -> list[str]:
    """Names of the task head's modules: timm's pretrained_cfg['classifier'], else the usual HF names."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("classifier"), str):
        return [cfg["classifier"]]
    for name in ("classifier", "score", "head", "fc"):
        if isinstance(getattr(model, name, None), nn.Module):
            return [name]
    raise UserError(f"cannot find the head of {type(model).__name__}: the task must name it (head_names)")


def _train_all(model, head, targets, hyper):
    model.requires_grad_(True)
    return model


def _linear_probe(model, head, targets, hyper):
    model.requires_grad_(False)
    for name in head:
        model.get_submodule(name).requires_grad_(True)
    return model


def _lora(model, head, targets, hyper):
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    in_place = getattr(model, "peft_in_place", False)
    config = LoraConfig(
        r=hyper.lora_r,
        lora_alpha=hyper.lora_alpha or 2 * hyper.lora_r,
        lora_dropout=hyper.lora_dropout,
        target_modules=targets,
        modules_to_save=None if in_place else head,  # the new head trains in full
    )
    try:
        if not in_place:
            return get_peft_model(model, config)
        # A model whose forward indexes its own submodules (Ultralytics) cannot be wrapped: the adapters go in
        # place, the base is frozen by hand and the head unfrozen; its own class and attributes stay intact.
        model.requires_grad_(False)
        model = inject_adapter_in_model(config, model)
        for name in head:
            model.get_submodule(name).requires_grad_(True)
        return model
    except ValueError as err:  # peft: target modules not found in the model
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise UserError(f"LoRA targets {targets!r} do not fit {type(model).__name__} ({str(err).splitlines()[0][:120]});"
                        f" set lora_targets, e.g. to some of: {', '.join(names[:30])}") from None


def merge_lora_in_place(model: nn.Module) -> nn.Module:
    """Fold in-place LoRA adapters into their base layers and drop them (a plain model again, e.g. to save)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


register_mode(Mode("scratch", False, 5e-4, "same architecture and config, random init; all parameters train",
                   _train_all))
register_mode(Mode("finetune", True, 5e-5, "pretrained weights; all parameters train", _train_all))
register_mode(Mode("lora", True, 1e-3, "pretrained weights frozen; peft LoRA adapters and the head train", _lora,
                   imports=("peft",)))
register_mode(Mode("linear-probe", True, 1e-2, "pretrained weights frozen; only the head trains",
                   _linear_probe, head_only=True))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable); LoRA adapters count in both."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable
