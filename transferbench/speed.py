"""Speed options of the HF loop that change how a model runs, not what it learns (suite keys in config.Hyper):
`gradient_checkpointing` and `channels_last` here; `compile` is accelerate's dynamo backend (runners/orchestrate/execute.py)."""
from __future__ import annotations

import torch
from torch import nn

from .errors import UserError


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """transformers models (activation_checkpointing_enable, formerly gradient_checkpointing_enable) and timm
    models (set_grad_checkpointing, also on wrappers that forward it). Non-reentrant checkpointing, so frozen
    inputs (LoRA, linear-probe) still get gradients through the recomputed blocks."""
    kwargs = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        elif hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(True)
        else:
            raise ValueError(f"{type(model).__name__} has no gradient checkpointing switch")
    except (ValueError, NotImplementedError, AssertionError) as err:
        raise UserError(f"gradient_checkpointing: {str(err).splitlines()[0]}; set gradient_checkpointing: false "
                        f"for this model") from None


def to_channels_last(model: nn.Module) -> nn.Module:
    """NHWC storage for every 4-D parameter and buffer (convolutions); other tensors are unaffected."""
    return model.to(memory_format=torch.channels_last)


def batch_channels_last(batch: dict) -> dict:
    """4-D floating-point inputs (images) in NHWC, matching a channels_last model; nothing else changes."""
    return {k: v.contiguous(memory_format=torch.channels_last)
            if isinstance(v, torch.Tensor) and v.dim() == 4 and v.is_floating_point() else v
            for k, v in batch.items()}
