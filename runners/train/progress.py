"""What a run shows while it trains: its progress bar's label, the per-step loss line, and whether -q silenced both."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

def bar_label(spec, n: int) -> str:
    """The progress bar's name for a run: model, budget, mode, seed."""
    model = spec.model if spec.model.startswith(("pretrain:", "config:")) else Path(spec.model).name or spec.model
    return f"{model[:28]} n={n} {spec.mode} s{spec.seed}"


class PlainLines:
    """Where the run's bar is off only because stderr is not a terminal (nohup, CI, a redirected log), one plain log
    line per evaluation instead, so a log file shows a long run's progress and not only the suite's [i/N] lines."""

    def __init__(self, label: str, total: int, per_epoch: int):
        self.label, self.total, self.per_epoch = label, total, per_epoch
        self.logger = logging.getLogger("transferbench")

    @classmethod
    def instead_of(cls, bar, main_process: bool, label: str, total: int, per_epoch: int):
        """A PlainLines when `bar` is disabled for want of a terminal (not for -q, nor on another process)."""
        return cls(label, total, per_epoch) if bar.disable and main_process and not quiet() else None

    def evaluated(self, out, metric_name: str, loss: float) -> None:
        point = out.curve[-1]
        self.logger.info(f"{self.label}: step {point['step']}/{self.total} (epoch {point['step'] / self.per_epoch:.2f}) "
                         f"loss {loss:.4f} {metric_name} {point['metric']:.4f} ({point['seconds']:.1f}s)")


def quiet() -> bool:
    """`transferbench -q`: the logger is set above INFO, and progress bars are off too."""
    return logging.getLogger("transferbench").level > logging.INFO


class StepLog:
    """Per-step training loss and learning rate for the trackers, buffered on the device and read every
    LOG_EVERY steps (one sync, where the loop already syncs), so tracking adds no sync per step."""

    def __init__(self, accelerator, losses: list):
        self.accelerator, self.losses = accelerator, losses
        self.steps: list[tuple[int, int, float]] = []  # (step, batches so far, learning rate of that step)
        self.read = 0  # batches already logged

    def step(self, step: int, lr: float) -> None:
        self.steps.append((step, len(self.losses), lr))

    def flush(self) -> None:
        if not self.steps:
            return
        values = torch.stack(self.losses[self.read:self.steps[-1][1]]).float().tolist()
        start = self.read
        for step, end, lr in self.steps:
            window = values[start - self.read:end - self.read]
            self.accelerator.log({"train/loss": sum(window) / len(window), "train/learning_rate": lr}, step=step)
            start = end
        self.read, self.steps = self.steps[-1][1], []
