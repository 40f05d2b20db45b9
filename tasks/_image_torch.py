"""The image task's torch-backed classes, apart so that importing the task (the registry, `transferbench list`)
does not import torch; tasks/image_classification.py imports them when it builds a model or holds a split."""
from __future__ import annotations

import torch


class TimmClassifier(torch.nn.Module):
    """A timm model behind the transformers calling convention, so the one loop drives both."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, labels=None):
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.model(pixel_values)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

    def set_grad_checkpointing(self, enable: bool = True) -> None:  # the suite's gradient_checkpointing
        self.model.set_grad_checkpointing(enable)


class Examples(torch.utils.data.Dataset):
    """A split held as tensors: indexing is a tensor slice, not an Arrow row decode (~50x faster per item)."""

    def __init__(self, columns: dict[str, torch.Tensor]):
        self.columns = columns

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}
