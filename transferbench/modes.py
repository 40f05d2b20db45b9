"""Modes: how a model is initialised and which of its parameters train.

A mode sees only an `nn.Module`, the names of its head modules and the adapter target patterns, all given by
the task, so it never branches on task type. The task builds the model (pretrained weights, or the same
config randomly initialised when `mode.pretrained` is False); the mode then decides what trains.

Besides the registered modes, any mode a suite gives a `peft:` mapping is a peft-family mode (peft_modes.py):
`get_mode(name, hyper)` returns it for that run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import peft_modes
from .errors import UserError, check_unique, did_you_mean
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
    adapts: bool = False  # it adds adapters: `prepare` gets the task's default target modules
    # whether it fits a model (its blocks, its adapters' layer types) is checked at preflight, on a randomly
    # initialised copy, so a misfit is one line before anything trains rather than a failed run per seed
    checked_on_model: bool = False
    # the rates `lr: auto` tries (runners/train/lr_search.py); () = half-decades around default_lr, two each side
    lr_grid: tuple[float, ...] = ()

    @property
    def auto_grid(self) -> tuple[float, ...]:
        return self.lr_grid or tuple(float(f"{self.default_lr * 10 ** (k / 2):.1g}") for k in range(-2, 3))


MODES: dict[str, Mode] = {}


def register_mode(mode: Mode) -> Mode:
    check_unique("mode", mode.name, MODES, mode)
    MODES[mode.name] = mode
    return mode


def get_mode(name: str, hyper=None) -> Mode:
    """The registered mode `name`, or, when the run's hyper-parameters carry a peft config, the peft family under
    that name (a suite's `modes: {dora: {peft: {method: lora, use_dora: true}}}`, or `lora` given a `peft:`)."""
    if hyper is not None and getattr(hyper, "peft", None) is not None:
        return dataclasses.replace(PEFT_FAMILY, name=name)
    if name not in MODES:
        raise UserError(f"unknown mode '{name}'{did_you_mean(name, MODES)}")
    return MODES[name]


def apply(mode: Mode, model: nn.Module, task, hyper) -> nn.Module:
    """`mode` applied to a model the task built: the task names the head and, for a mode with adapters, the
    default target modules of this model (and its feed-forward layers, which some peft methods treat apart)."""
    targets = []
    if mode.adapts:
        peft = hyper.peft or {}
        targets = task.lora_targets_for(model, peft.get("target_modules") or hyper.lora_targets)
        if hyper.peft is not None:
            targets = {"target_modules": targets, "feedforward_modules": task.feedforward_targets_for(model)}
    return mode.prepare(model, task.head_names(model), targets, hyper)


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
    from peft import LoraConfig

    in_place = getattr(model, "peft_in_place", False)
    config = LoraConfig(
        r=hyper.lora_r,
        lora_alpha=hyper.lora_alpha or 2 * hyper.lora_r,
        lora_dropout=hyper.lora_dropout,
        target_modules=targets,
        modules_to_save=None if in_place else head,  # the new head trains in full
    )
    try:
        return peft_modes.attach(model, config, head)
    except ValueError as err:  # peft: target modules not found in the model
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
        raise UserError(f"LoRA targets {targets!r} do not fit {type(model).__name__} ({str(err).splitlines()[0][:120]});"
                        f" set lora_targets, e.g. to some of: {', '.join(names[:30])}") from None


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """The model's repeated blocks, found without knowing its type: among its nn.ModuleList / nn.Sequential
    containers whose children (at least 2) are all of one class and hold parameters, the one holding most
    parameters (so a network's list of stages wins over one stage's list of blocks; ties: the outermost).
    Returns (a name for it, e.g. 'BertEncoder.layer', its children in order)."""
    best, best_key = None, None
    for name, module in model.named_modules():
        children = list(module.children())
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(children) < 2:
            continue
        if len({type(c) for c in children}) != 1 or not any(True for _ in module.parameters()):
            continue
        key = (sum(p.numel() for p in module.parameters()), -name.count("."))
        if best_key is None or key > best_key:
            best, best_key = (name, children), key
    if best is None:
        raise UserError(f"partial: {type(model).__name__} has no repeated block list (an nn.ModuleList or "
                        f"nn.Sequential of two or more same-class modules) to fine-tune the last blocks of")
    name, children = best
    parent, _, attr = name.rpartition(".")
    owner = type(model.get_submodule(parent)).__name__ if name else type(model).__name__
    return (f"{owner}.{attr}" if name else owner), children


def _partial(model, head, targets, hyper):
    where, blocks = find_blocks(model)
    k = hyper.partial_blocks
    if k > len(blocks):
        raise UserError(f"partial_blocks {k} > {len(blocks)} blocks of {where}; choose 1 to {len(blocks)}")
    model.requires_grad_(False)
    for block in blocks[len(blocks) - k:]:
        block.requires_grad_(True)
    for name in head:
        model.get_submodule(name).requires_grad_(True)
    return model


def merge_lora_in_place(model: nn.Module) -> nn.Module:
    """Fold in-place adapters (LoRA, or any peft method's layers that merge) into their base layers and drop them
    (a plain model again, e.g. to save)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


# `lr: auto` grids: half-decades over the range each kind of training is known to work in, from BERT-style
# fine-tuning (1e-5) to CNN fine-tuning (1e-3), adapters (up to 1e-2; IA3/VeRA-like methods up to 3e-2), heads
FULL_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
register_mode(Mode("scratch", False, 5e-4, "same architecture and config, random init; all parameters train",
                   _train_all, lr_grid=(1e-4, 3e-4, 1e-3, 3e-3)))
register_mode(Mode("finetune", True, 5e-5, "pretrained weights; all parameters train", _train_all, lr_grid=FULL_GRID))
register_mode(Mode("lora", True, 1e-3, "pretrained weights frozen; peft LoRA adapters and the head train", _lora,
                   imports=("peft",), adapts=True, lr_grid=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2)))
register_mode(Mode("linear-probe", True, 1e-2, "pretrained weights frozen; only the head trains",
                   _linear_probe, head_only=True, lr_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1)))
register_mode(Mode("partial", True, 5e-5, "pretrained weights; the last partial_blocks blocks (found generically) "
                   "and the head train, the rest is frozen", _partial, checked_on_model=True, lr_grid=FULL_GRID))
# Not registered: the mode a suite names with a `peft:` mapping (get_mode gives it that name)
PEFT_FAMILY = Mode("peft", True, peft_modes.DEFAULT_LR, "pretrained weights frozen; a peft method's adapters "
                   "(its peft config from the suite) and the head train", peft_modes.prepare, imports=("peft",),
                   adapts=True, checked_on_model=True, lr_grid=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2))


adapter_bytes = peft_modes.adapter_bytes


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable); LoRA adapters count in both."""
    return parameter_counts(model)[:2]


def parameter_counts(model: nn.Module) -> tuple[int, int, int]:
    """(total, trainable, the trainable tensors' bytes) in one pass over the parameters (~0.5 ms on MiniLM)."""
    total = trainable = nbytes = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
            nbytes += n * p.element_size()
    return total, trainable, nbytes
