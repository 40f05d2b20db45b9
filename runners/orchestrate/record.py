"""The one place a run's record is built: from its plan (identity, config, policy), what its loop returned (the
outcome, None when it failed before returning) and what the executor measured around it (times, hardware, memory,
energy, failures). Loops and executors never set a record field themselves."""
from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Optional

from transferbench import convergence, cost, flops
from transferbench.energy import Energy
from transferbench.outcome import TrainOutcome
from transferbench.results import SCHEMA_VERSION, Result
from transferbench.tasks import get_task, headline_metric

from .plan import RunPlan


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Measured:
    """What the executor saw around a run."""
    device_name: str
    device_count: int
    num_processes: int
    env: dict[str, Any]  # provenance (versions, git commit, host), plus the executor's and a traceback if any
    started_at: str = dataclasses.field(default_factory=now)
    wall_seconds: float = 0.0  # every attempt, plus shared work charged to this run
    charged_seconds: float = 0.0  # that shared work
    status: str = "ok"
    error: Optional[str] = None
    oom_retries: int = 0
    planned_batch: tuple[Optional[int], Optional[int]] = (None, None)  # (per-device batch, grad_accum) tried last
    peak_memory: tuple[Optional[int], Optional[str]] = (None, None)  # (bytes, kind)
    energy: Optional[Energy] = None


def build_record(plan: RunPlan, outcome: Optional[TrainOutcome], m: Measured) -> Result:
    spec = plan.spec
    metric_name, higher_is_better = headline_metric(get_task(spec.task), spec.metric)
    res = Result(
        schema_version=SCHEMA_VERSION, run_id=spec.run_id, suite=spec.suite, task=spec.task,
        dataset=spec.dataset.source, model=spec.model, mode=spec.mode, seed=spec.seed, train_samples=None,
        metric_name=metric_name, higher_is_better=higher_is_better,
        target=spec.target.value if spec.target else None, device_name=m.device_name, device_count=m.device_count,
        num_processes=m.num_processes, mixed_precision=spec.hyper.mixed_precision, started_at=m.started_at,
        compile=spec.hyper.compile, channels_last=spec.hyper.channels_last,
        gradient_checkpointing=spec.hyper.gradient_checkpointing, config=spec.model_dump(mode="json"), env=m.env,
        status=m.status, error=m.error, oom_retries=m.oom_retries, lr=plan.lr if plan.search is None else None)
    res.peak_memory_bytes, res.peak_memory_kind = m.peak_memory
    if outcome is not None:
        _trained(res, outcome)
    else:  # what it tried to train with, which an out-of-memory error is about
        res.per_device_batch, res.grad_accum = m.planned_batch
    if m.energy is not None:
        res.energy_kwh, res.co2_kg, res.grid_gco2_per_kwh = m.energy.kwh, m.energy.co2_kg, m.energy.grid_gco2_per_kwh
        res.energy_source, res.energy_note = m.energy.source, m.energy.note
    res.wall_seconds = m.wall_seconds
    res.charged_seconds = round(m.charged_seconds, 3) if m.charged_seconds else None
    res.device_hours = cost.device_hours(m.wall_seconds, res.device_count)
    price = cost.lookup(res.device_name, plan.policy.price_per_device_hour)
    res.price_per_device_hour, res.price_date = price.per_device_hour, price.date
    res.cost_usd = cost.cost_usd(res.device_hours, price)
    res.finished_at = now()
    return res


def _trained(res: Result, out: TrainOutcome) -> None:
    """The training fields, from a loop's outcome."""
    res.dataset = out.dataset or res.dataset
    res.train_samples = out.train_samples
    res.params_total, res.params_trainable = out.params_total, out.params_trainable
    res.adapter_bytes = out.adapter_bytes
    res.eval_samples = out.eval_samples
    res.metrics = dict(out.metrics)
    res.metric = out.metrics.get(res.metric_name)
    values = [p["metric"] for p in out.curve]
    res.best_metric = (max(values) if res.higher_is_better else min(values)) if values else None
    res.curve, res.time_to_target_s = out.curve, out.time_to_target_s
    res.train_seconds, res.eval_seconds, res.setup_seconds = out.train_seconds, out.eval_seconds, out.setup_seconds
    res.samples_per_second = out.samples_seen / out.train_seconds if out.train_seconds else None
    res.optimizer_steps, res.epochs_run, res.stop_reason = out.optimizer_steps, out.epochs_run, out.stop_reason
    res.per_device_batch, res.grad_accum = out.per_device_batch, out.grad_accum
    res.max_grad_norm = out.max_grad_norm
    res.flops_estimate = out.flops
    res.converged, res.convergence = convergence.judge(out.curve, out.losses, res.higher_is_better, out.stop_reason)
    res.loss_curve = thin(out.losses)
    res.peak_flops = flops.peak_flops(res.device_name, res.mixed_precision)
    res.mfu = flops.mfu(res.flops_estimate, res.train_seconds, res.peak_flops, res.device_count)
    res.saved_model = out.saved_model
    res.resumed_at_step = out.resumed_at_step
    if out.lr is not None:  # a searched rate: the one the search chose
        res.lr, res.lr_search = out.lr, out.lr_search
    res.plateau = out.plateau


def thin(losses: list[float], points: int = 50) -> list[dict[str, float]]:
    """The training-loss curve at most `points` long: the mean loss of each window of steps."""
    if not losses:
        return []
    width = -(-len(losses) // points)
    return [{"step": min(i + width, len(losses)), "loss": round(sum(w) / len(w), 5)}
            for i in range(0, len(losses), width) for w in [losses[i:i + width]]]
