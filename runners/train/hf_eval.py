"""Evaluation in the HF loop: the task's metrics over a split (gathered once per example across processes), one
point of the curve with time-to-target, and early stopping on the validation subset."""
from __future__ import annotations

import time

import torch

from transferbench.outcome import TrainOutcome

from ..signals import check_stop

EVAL_BATCH = 128  # the smallest per-device evaluation batch (2 x the training batch when that is larger)


def evaluate(model, loader, task, accelerator, with_loss: bool = False) -> dict[str, float]:
    """The task's metrics over the whole eval split, plus `eval_samples`: how many examples were scored, and with
    `with_loss` the mean loss (`loss`; the learning-rate search breaks ties with it)."""
    model.eval()
    preds, refs = [], []
    loss_sum = torch.zeros(2, device=accelerator.device)  # (sum of per-example losses, examples) on this process
    with torch.inference_mode():
        for batch in loader:
            check_stop()
            loss, logits = task.loss_and_logits(model, batch)
            if with_loss:
                n = len(batch["labels"])
                loss_sum += torch.stack([loss.detach().float() * n, loss_sum.new_tensor(n)])
            p, r = accelerator.gather_for_metrics((task.predictions(logits), batch["labels"]))
            preds.append(p.cpu())
            refs.append(r.cpu())
    train_mode(model)
    preds, refs = torch.cat(preds).tolist(), torch.cat(refs).tolist()
    extra = {}
    if with_loss:
        total, n = accelerator.reduce(loss_sum, reduction="sum").tolist()
        extra["loss"] = total / n
    return {**task.compute_metrics(preds, refs), **extra, "eval_samples": len(refs)}


def train_mode(model) -> None:
    """Train mode, except BatchNorm layers with nothing to train (linear-probe, LoRA): they keep their pretrained
    running statistics, so a frozen backbone really is frozen (as Ultralytics' `freeze` does)."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


class EarlyStop:
    """Patience on the validation subset's metric (carved from the training pool; the eval split never decides)."""

    def __init__(self, rule, task, loader):
        self.rule, self.task, self.loader = rule, task, loader
        self.best, self.waited = None, 0

    def done(self, model, accelerator, out: TrainOutcome) -> bool:
        t0 = time.perf_counter()
        value = evaluate(model, self.loader, self.task, accelerator)[self.task.metric_name]
        out.eval_seconds += time.perf_counter() - t0
        out.curve[-1]["validation"] = value
        gain = None if self.best is None else (value - self.best) * (1 if self.task.higher_is_better else -1)
        if gain is None or gain > self.rule.min_delta:
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        return self.waited >= self.rule.patience


def eval_values(out: TrainOutcome, task) -> dict:
    """One evaluation for the trackers: every metric of the task, and the validation subset's (early stopping)."""
    values = {f"eval/{k}": float(v) for k, v in out.metrics.items()}
    if out.curve[-1].get("validation") is not None:
        values[f"validation/{task.metric_name}"] = float(out.curve[-1]["validation"])
    return values


def evaluate_point(model, eval_dl, task, accelerator, out: TrainOutcome, start: float, target,
                    with_loss: bool = False) -> bool:
    """One point of the curve; True when it reaches a target that stops the run."""
    t0 = time.perf_counter()
    metrics = evaluate(model, eval_dl, task, accelerator, with_loss)
    out.eval_samples = int(metrics.pop("eval_samples"))
    out.eval_seconds += time.perf_counter() - t0
    seconds = time.perf_counter() - start
    out.curve.append({"step": out.optimizer_steps, "samples_seen": out.samples_seen, "seconds": round(seconds, 3),
                      "metric": metrics[task.metric_name]})
    out.metrics = metrics
    if target is None or target.metric not in metrics:
        return False
    value = metrics[target.metric]
    reached = (value >= target.value) if task.higher_is_better else (value <= target.value)
    if reached and out.time_to_target_s is None:
        out.time_to_target_s = round(seconds, 3)
    return reached and target.stop
