"""What a training loop returns: the contract between loops (runners/train/) and the result record (results.py).

Every loop (the Accelerate loop, the Ultralytics adapter, a loop added later) fills a `TrainOutcome`;
runners/orchestrate/record.build_record is the one place that turns it into record fields, so two loops can never
fill the same field two ways.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class TrainOutcome:
    metrics: dict[str, float] = field(default_factory=dict)  # the final evaluation (every metric of the task)
    eval_samples: Optional[int] = None  # examples the final evaluation scored (all processes)
    # {step, samples_seen, seconds, metric, train_loss, ...} per evaluation; train_loss: the mean training loss
    # of the batches since the evaluation before (None where the loop has none)
    curve: list[dict] = field(default_factory=list)
    time_to_target_s: Optional[float] = None  # from the first optimizer step, evaluations included (MLPerf)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    setup_seconds: float = 0.0  # data and model loading, mode preparation, loaders, prepare
    samples_seen: int = 0
    optimizer_steps: int = 0
    epochs_run: float = 0.0
    stop_reason: Optional[str] = None  # epochs | max_steps | max_seconds | target
    per_device_batch: Optional[int] = None
    grad_accum: Optional[int] = None
    max_grad_norm: Optional[float] = None  # the gradient clipping applied (None: none)
    flops: Optional[float] = None  # training FLOPs, None when the loop has no estimate
    losses: list[float] = field(default_factory=list)  # training loss per batch (or per epoch)
    # Shared work another run did and this one uses (cached features), at this run's share, minus such work
    # this run did for others: added to the measured wall time, so each run is billed what it would cost alone.
    charged_seconds: float = 0.0
    dataset: Optional[str] = None  # the data's identity as trained (what the record's `dataset` says)
    train_samples: Optional[int] = None  # the budget, resolved
    params_total: Optional[int] = None
    params_trainable: Optional[int] = None
    adapter_bytes: Optional[int] = None  # what training adds to the base model, in bytes (modes.adapter_bytes)
    saved_model: Optional[str] = None  # where the final weights were saved (save_models: final), else None
    lr: Optional[float] = None  # the learning rate trained at (given, or chosen by a search); None: as configured
    lr_search: Optional[dict] = None  # the search that chose it (runners/train/lr_search.py), None when lr was given
    plateau: Optional[dict] = None  # schedule: plateau: its phase (runners/train/plateau.py summary), else None
    resumed_at_step: Optional[int] = None  # the optimizer step of the mid-run checkpoint it resumed from, else None
    # Not recorded: what a caller may still need (a pretrain stage saves the model with its processor).
    model: Any = None
    data: Any = None


class Diverged(RuntimeError):
    """Raised by a loop when the training loss became NaN or infinite: the run's status is `diverged`."""
