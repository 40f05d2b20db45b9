"""Linear-probe on cached features (`cached_features: true`): the frozen backbone runs once per example, and
the head trains on what it fed the head, through the same loop, schedule, subset, shuffling and head init.

What the head sees: the input of the head module (found by a forward hook, so it works for any task and
model the task can name a head of), with the model in eval mode: no dropout and no augmentation, which is
how a linear probe is usually defined; BatchNorm statistics are the pretrained ones in both paths.

Features are kept per (model, dataset, preprocessing) for the process, so the seeds and budgets of one
benchmark share them. Each run is charged what it would have cost alone: the measured seconds per example
times the examples it uses (its training subset in train seconds, the eval split in eval seconds, both
before its first step, so in its time-to-target too) — a run that found its features cached is not cheaper
on paper than one that computed them.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset

from transferbench.outcome import TrainOutcome

from ..signals import check_stop

_STORES: "OrderedDict[tuple, FeatureStore]" = OrderedDict()
KEEP = 4  # feature stores kept per process (a few benchmarks' worth; each is examples x head width floats)


@dataclass
class FeatureStore:
    train: dict[int, tuple[torch.Tensor, int]] = field(default_factory=dict)  # example index -> (features, label)
    eval: Optional[list[tuple[torch.Tensor, int]]] = None
    seconds: float = 0.0  # spent extracting, all examples so far
    examples: int = 0

    @property
    def seconds_per_example(self) -> float:
        return self.seconds / self.examples if self.examples else 0.0


class _Rows(Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        features, label = self.rows[i]
        return {"features": features, "labels": label}


def _collate(rows):
    return {"features": torch.stack([r["features"] for r in rows]), "labels": torch.tensor([r["labels"] for r in rows])}


class HeadTask:
    """The task as the loop sees it when only the head trains, on features: the head's logits, the task's
    loss on them (Task.head_loss), predictions and metrics."""

    def __init__(self, task):
        self.task = task
        self.metric_name, self.higher_is_better = task.metric_name, task.higher_is_better
        self.predictions, self.compute_metrics = task.predictions, task.compute_metrics

    def loss_and_logits(self, head, batch):
        logits = head(batch["features"])
        return self.task.head_loss(logits, batch["labels"]), logits

    def flops_per_batch(self, params_total, batch):
        return None


def head_module(task, model) -> Optional[torch.nn.Module]:
    """The one head module whose input the probe reads, or None (several heads: train through the model)."""
    names = task.head_names(model)
    return model.get_submodule(names[0]) if len(names) == 1 else None


def _extract(model, head, examples, collate, batch_size: int, device) -> list[tuple[torch.Tensor, int]]:
    """(features, label) per example: the head's input, the model in eval mode, no gradients."""
    seen = []
    hook = head.register_forward_hook(lambda module, args, output: seen.append(args[0].detach().float().cpu()))
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in DataLoader(examples, batch_size=batch_size, collate_fn=collate):
                check_stop()
                model(**{k: v.to(device) for k, v in batch.items()})
                rows += list(zip(seen.pop().flatten(1), batch["labels"].tolist()))
    finally:
        hook.remove()
        model.train(was_training)
    return rows


def prepare(key: tuple, task, model, train_set, data, batch_size: int, device):
    """(features dataset of the training subset in its order, of the eval split, seconds spent now, seconds to
    charge for the train part, for the eval part)."""
    store = _STORES.pop(key, None) or FeatureStore()
    _STORES[key] = store  # most recent last
    while len(_STORES) > KEEP:
        _STORES.popitem(last=False)
    head, collate = head_module(task, model), data.eval_collate or data.collate
    indices = list(train_set.indices)
    missing = [i for i in dict.fromkeys(indices) if i not in store.train]
    t0 = time.perf_counter()
    model.to(device)
    if missing:
        rows = _extract(model, head, torch.utils.data.Subset(train_set.dataset, missing), collate, batch_size, device)
        store.train.update(zip(missing, rows))
        store.examples += len(missing)
    if store.eval is None:
        store.eval = _extract(model, head, data.eval, collate, batch_size, device)
        store.examples += len(store.eval)
    spent = time.perf_counter() - t0
    store.seconds += spent
    rate = store.seconds_per_example
    return (_Rows([store.train[i] for i in indices]), _Rows(store.eval), spent, rate * len(indices),
            rate * len(store.eval))


def train_head(spec, task, model, train_set, data, accelerator, key: tuple, train_loop) -> TrainOutcome:
    """The probe through `train_loop` (the one loop) on cached features, its time charged as documented."""
    per_device = spec.hyper.per_device_batch(accelerator.num_processes)
    t0 = time.perf_counter()
    train_rows, eval_rows, spent, train_charge, eval_charge = prepare(
        key, task, model, train_set, data, 2 * per_device, accelerator.device)
    overhead = time.perf_counter() - t0 - spent
    from transferbench.tasks import TaskData

    features = TaskData(train=train_rows, eval=eval_rows, collate=_collate, labels=data.labels,
                        identity=data.identity)
    out = train_loop(spec, HeadTask(task), head_module(task, model), train_rows, features, accelerator, 0)
    before = train_charge + eval_charge  # the features exist before the first step
    out.train_seconds += train_charge
    out.eval_seconds += eval_charge
    out.setup_seconds += overhead
    out.charged_seconds = before - spent  # execute bills the wall time with it
    for point in out.curve:
        point["seconds"] = round(point["seconds"] + before, 3)
    if out.time_to_target_s is not None:
        out.time_to_target_s = round(out.time_to_target_s + before, 3)
    out.model = model
    return out
