"""The one training loop: Accelerate, AdamW, warm-up schedule, periodic evaluation.

Shape of the Accelerate examples: prepare, then `with accelerator.accumulate(model)`, backward, step.
Evaluation gathers with gather_for_metrics, so under N processes every eval example counts exactly once.
Time-to-target counts from the first optimizer step and includes evaluation (MLPerf convention).

Training ends at the first of: the epochs (or `max_steps`, which replaces them), `max_seconds`, and, when the
target says `stop: true`, the first evaluation that reaches it; `stop_reason` says which.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferbench.errors import UserError
from transferbench.speed import batch_channels_last

LOG_EVERY = 10  # optimizer steps between divergence checks / progress-bar updates (each one syncs a GPU)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the run in progress stops after its current step and is not recorded."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_requested: list[int] = []  # the stop signal received inside graceful_stop(), if any


@contextlib.contextmanager
def graceful_stop():
    """Inside: the first SIGINT/SIGTERM asks the loop to stop after the current step (so no store write is
    ever cut short); a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _requested:
            raise Interrupted(signum)
        _requested.append(signum)
        print("transferbench: stopping after the current step (again to stop at once)", file=sys.stderr, flush=True)

    _requested.clear()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _requested.clear()


def check_stop() -> None:
    """Raise Interrupted if a stop was requested (called between steps and between runs)."""
    if _requested:
        raise Interrupted(_requested[0])


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
    stop_reason: Optional[str] = None  # epochs | max_steps | max_seconds | target
    per_device_batch: Optional[int] = None
    flops: Optional[float] = None
    setup_seconds: float = 0.0  # loaders, optimizer, accelerate prepare (before the first step)
    model: object = None  # the trained model, unwrapped (a pretrain stage saves it)
    data: object = None  # the TaskData it trained on (a stage saves its processor beside the weights)


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
    with torch.inference_mode():
        for batch in loader:
            check_stop()
            _, logits = task.loss_and_logits(model, batch)
            p, r = accelerator.gather_for_metrics((task.predictions(logits), batch["labels"]))
            preds.append(p.cpu())
            refs.append(r.cpu())
    model.train()
    preds, refs = torch.cat(preds).tolist(), torch.cat(refs).tolist()
    return {**task.compute_metrics(preds, refs), "eval_samples": len(refs)}


def train(spec, task, model, train_set, data, accelerator, params_total: int) -> LoopResult:
    """Train `model` on `train_set` (the budget's subset of data.train), evaluating on data.eval."""
    t_enter = time.perf_counter()
    hyper = spec.hyper
    per_device = per_device_batch(hyper.batch_size, accelerator.num_processes, hyper.grad_accum)
    pin = accelerator.device.type == "cuda"  # page-locked batches copy to the GPU faster; no use on CPU
    train_dl = DataLoader(train_set, batch_size=per_device, shuffle=True, collate_fn=data.collate,
                          generator=torch.Generator().manual_seed(spec.seed), pin_memory=pin)
    eval_dl = DataLoader(data.eval, batch_size=2 * per_device, collate_fn=data.eval_collate or data.collate,
                         pin_memory=pin)
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
    out = LoopResult(flops=0.0, per_device_batch=per_device)
    bar = tqdm(total=total_steps, desc=f"{spec.mode} s{spec.seed}", leave=False, dynamic_ncols=True,
               disable=None if accelerator.is_main_process else True)  # None: off when not a TTY
    # The sum of every loss so far: NaN or infinite as soon as one loss is (one in-place add per step, no sync;
    # finite losses would need to exceed 3e38 together to overflow it). Read every LOG_EVERY steps.
    loss_sum = torch.zeros((), dtype=torch.float32, device=accelerator.device)
    model.train()
    start = time.perf_counter()  # time-to-target and train time count from the first optimizer step
    out.setup_seconds = start - t_enter
    while out.stop_reason is None:
        for batch in train_dl:
            if hyper.channels_last:
                batch = batch_channels_last(batch)
            with accelerator.accumulate(model):
                loss, _ = task.loss_and_logits(model, batch)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            loss_sum.add_(loss.detach())
            n = len(batch["labels"]) * accelerator.num_processes
            out.samples_seen += n
            flops = task.flops_per_batch(params_total, batch)
            out.flops = None if flops is None or out.flops is None else out.flops + flops * accelerator.num_processes
            check_stop()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            out.optimizer_steps += 1
            step = out.optimizer_steps
            bar.update()
            if step >= total_steps:
                out.stop_reason = "max_steps" if hyper.max_steps else "epochs"
            elif hyper.max_seconds is not None and time.perf_counter() - start >= hyper.max_seconds:
                out.stop_reason = "max_seconds"
            if step % LOG_EVERY == 0 or out.stop_reason or step % eval_interval == 0:
                _check_finite(loss_sum, loss, step, accelerator)  # every process agrees, so all stop together
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if step % eval_interval == 0 or out.stop_reason:
                if _evaluate_point(model, eval_dl, task, accelerator, out, start, target):
                    out.stop_reason = out.stop_reason or "target"
            if out.stop_reason:
                break
    bar.close()
    out.train_seconds = time.perf_counter() - start - out.eval_seconds
    out.epochs_run = out.optimizer_steps / steps_per_epoch
    out.model = accelerator.unwrap_model(model, keep_torch_compile=False)
    return out


def _check_finite(loss_sum, loss, step: int, accelerator) -> None:
    if not torch.isfinite(accelerator.gather(loss_sum.reshape(1))).all().item():
        raise Diverged(f"training loss became NaN or infinite by step {step} (last: {loss.item()})")


def _evaluate_point(model, eval_dl, task, accelerator, out: LoopResult, start: float, target) -> bool:
    """One point of the curve; True when it reaches a target that stops the run."""
    t0 = time.perf_counter()
    metrics = evaluate(model, eval_dl, task, accelerator)
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
