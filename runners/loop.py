"""The one training loop: Accelerate, AdamW, warm-up schedule, periodic evaluation.

Shape of the Accelerate examples: prepare, then `with accelerator.accumulate(model)`, backward, step.
Evaluation gathers with gather_for_metrics, so under N processes every eval example counts exactly once.
Time-to-target counts from the first optimizer step and includes evaluation (MLPerf convention).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferbench.errors import UserError

LOG_EVERY = 10  # optimizer steps between loss checks / progress-bar updates (each one syncs a GPU)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class LoopResult:
    metrics: dict[str, float] = field(default_factory=dict)  # final evaluation
    curve: list[dict] = field(default_factory=list)
    time_to_target_s: Optional[float] = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    samples_seen: int = 0
    optimizer_steps: int = 0
    epochs_run: float = 0.0
    flops: Optional[float] = None
    model: object = None  # the trained model, unwrapped (a pretrain stage saves it)


def per_device_batch(batch_size: int, num_processes: int, grad_accum: int) -> int:
    """The suite's batch_size is the effective batch: per-device x processes x grad_accum, so a run means
    the same optimisation on 1 GPU or 8."""
    per_device, rest = divmod(batch_size, num_processes * grad_accum)
    if rest or not per_device:
        raise UserError(f"batch_size {batch_size} is not divisible by processes ({num_processes}) x grad_accum "
                        f"({grad_accum}); choose a multiple of {num_processes * grad_accum}")
    return per_device


def evaluate(model, loader, task, accelerator) -> dict[str, float]:
    """The task's metrics over the whole eval split, plus `eval_samples`: how many examples were scored."""
    model.eval()
    preds, refs = [], []
    with torch.no_grad():
        for batch in loader:
            _, logits = task.loss_and_logits(model, batch)
            p, r = accelerator.gather_for_metrics((task.predictions(logits), batch["labels"]))
            preds.append(p.cpu())
            refs.append(r.cpu())
    model.train()
    preds, refs = torch.cat(preds).tolist(), torch.cat(refs).tolist()
    return {**task.compute_metrics(preds, refs), "eval_samples": len(refs)}


def train(spec, task, model, train_set, data, accelerator, params_total: int) -> LoopResult:
    """Train `model` on `train_set` (the budget's subset of data.train), evaluating on data.eval."""
    hyper = spec.hyper
    per_device = per_device_batch(hyper.batch_size, accelerator.num_processes, hyper.grad_accum)
    train_dl = DataLoader(train_set, batch_size=per_device, shuffle=True, collate_fn=data.collate,
                          generator=torch.Generator().manual_seed(spec.seed))
    eval_dl = DataLoader(data.eval, batch_size=2 * per_device, collate_fn=data.eval_collate or data.collate)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hyper.lr,
                                  weight_decay=hyper.weight_decay)
    model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)

    # Counted per process after prepare (each process sees 1/N of the batches).
    steps_per_epoch = max(1, math.ceil(len(train_dl) / hyper.grad_accum))
    total_steps = hyper.max_steps or max(1, math.ceil(hyper.epochs * steps_per_epoch))
    eval_interval = max(1, round(hyper.eval_every * steps_per_epoch))
    from transformers import get_scheduler  # stepped by hand once per optimizer step: no process scaling

    scheduler = get_scheduler(hyper.scheduler, optimizer, num_warmup_steps=int(hyper.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    target = spec.target
    out = LoopResult(flops=0.0)
    bar = tqdm(total=total_steps, desc=f"{spec.mode} s{spec.seed}", leave=False, dynamic_ncols=True,
               disable=None if accelerator.is_main_process else True)  # None: off when not a TTY
    model.train()
    start = time.perf_counter()  # time-to-target and train time count from the first optimizer step
    done = False
    while not done:
        for batch in train_dl:
            with accelerator.accumulate(model):
                loss, _ = task.loss_and_logits(model, batch)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            n = len(batch["labels"]) * accelerator.num_processes
            out.samples_seen += n
            flops = task.flops_per_batch(params_total, batch)
            out.flops = None if flops is None or out.flops is None else out.flops + flops * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            out.optimizer_steps += 1
            step = out.optimizer_steps
            if step % LOG_EVERY == 0 or step == total_steps:
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(f"loss is {value} at step {step}")
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            bar.update()
            elapsed = time.perf_counter() - start
            over_time = hyper.max_seconds is not None and elapsed >= hyper.max_seconds
            done = step >= total_steps or over_time
            if step % eval_interval == 0 or done:
                t0 = time.perf_counter()
                metrics = evaluate(model, eval_dl, task, accelerator)
                out.eval_seconds += time.perf_counter() - t0
                seconds = time.perf_counter() - start
                out.curve.append({"step": step, "samples_seen": out.samples_seen, "seconds": round(seconds, 3),
                                  "metric": metrics[task.metric_name]})
                out.metrics = metrics
                if target is not None and out.time_to_target_s is None and target.metric in metrics:
                    value = metrics[target.metric]
                    if (value >= target.value) if task.higher_is_better else (value <= target.value):
                        out.time_to_target_s = round(seconds, 3)
            if done:
                break
    bar.close()
    out.train_seconds = time.perf_counter() - start - out.eval_seconds
    out.epochs_run = out.optimizer_steps / steps_per_epoch
    out.model = accelerator.unwrap_model(model)
    return out
