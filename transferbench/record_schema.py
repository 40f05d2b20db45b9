"""The result record's schema as a store line must satisfy it (pydantic, strict): what `run` resumes from and `report`
tabulates is never a line that merely has a run_id. Required: the run's identity and outcome (run_id, status, suite,
task, dataset, model, mode, seed, metric_name, higher_is_better, and train_samples for an `ok` run); every number
finite and in its range. Fields a version added later are optional (older rows still load); unknown keys are kept
(a newer minor field, a hand-added note)."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# 2 added stop_reason, per_device_batch, grad_accum, oom_retries (with defaults: version-1 rows still load)
# 3 added peak_flops, mfu, compile, channels_last, gradient_checkpointing (defaults: older rows still load)
# 4 added converged, convergence, loss_curve
# 5 added max_grad_norm (gradient clipping as trained; rows before 5 were trained without clipping: None)
# 6 added energy_kwh, co2_kg, grid_gco2_per_kwh, energy_source, energy_note (transferbench/energy.py), saved_model;
#   curve points carry train_loss (older rows: no energy fields, no train_loss; they still load); adapter_bytes
# 7 added lr (the rate trained at) and lr_search (the search that chose it: grid, scores, chosen, steps, seconds)
# 8 added plateau (schedule: plateau); lr_search says where it validated and whether a candidate beat chance
# 9 added charged_seconds (shared work billed to the run beyond what its process spent); lr_search carries rungs,
#   per, by and reused (a cell's search, done once by its first seed's run); resumed_at_step (mid-run checkpoints)
SCHEMA_VERSION = 9

MAX_SEED = 2**32 - 1  # numpy's seeding (through accelerate's set_seed) takes 0 .. 2**32 - 1

Text = Annotated[str, Field(min_length=1)]
Finite = Optional[float]  # allow_inf_nan=False below: NaN and Infinity are refused
Amount = Optional[Annotated[float, Field(ge=0)]]
Count = Optional[Annotated[int, Field(ge=0)]]


class _Strict(BaseModel):
    # strict: "0.9" is not a metric, true is not a seed; allow_inf_nan=False: NaN / Infinity are refused
    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class CurvePoint(_Strict):
    step: Optional[float] = None
    samples_seen: Optional[float] = None
    seconds: Amount = None
    metric: Finite = None
    train_loss: Finite = None


class StoredRecord(_Strict):
    schema_version: int = Field(1, ge=1)  # absent in hand-made stores: read as the first version
    run_id: Text
    status: Literal["ok", "failed", "diverged"]
    suite: Text
    task: Text
    dataset: Text
    model: Text
    mode: Text
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)]
    train_samples: Optional[Annotated[int, Field(ge=1)]] = None
    metric_name: Text
    higher_is_better: bool
    metric: Finite = None
    best_metric: Finite = None
    target: Finite = None
    time_to_target_s: Amount = None
    train_seconds: Amount = None
    eval_seconds: Amount = None
    setup_seconds: Amount = None
    wall_seconds: Amount = None
    charged_seconds: Amount = None
    resumed_at_step: Count = None
    samples_per_second: Amount = None
    device_hours: Amount = None
    price_per_device_hour: Amount = None
    cost_usd: Amount = None
    energy_kwh: Amount = None
    co2_kg: Amount = None
    grid_gco2_per_kwh: Amount = None
    flops_estimate: Amount = None
    params_total: Count = None
    params_trainable: Count = None
    peak_memory_bytes: Count = None
    eval_samples: Count = None
    curve: Optional[list[CurvePoint]] = None
    metrics: Optional[dict[str, Any]] = None
    config: Optional[dict[str, Any]] = None
    env: Optional[dict[str, Any]] = None

    @field_validator("schema_version")
    @classmethod
    def _readable(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"{v} is newer than this transferbench reads ({SCHEMA_VERSION}); upgrade transferbench")
        return v

    @model_validator(mode="after")
    def _trained(self) -> "StoredRecord":
        if self.status == "ok" and self.train_samples is None:
            raise ValueError("an ok run without train_samples (how many examples it trained on)")
        return self


def problem(record: dict[str, Any]) -> Optional[str]:
    """Why a parsed store line is not a usable result record (one line: the first field and what is wrong), or
    None."""
    try:
        StoredRecord.model_validate(record)
    except ValidationError as err:
        errors = err.errors()
        missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
        if missing:
            return f"required field{'s' if len(missing) > 1 else ''} {', '.join(missing)} missing"
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        got = f" (got {first['input']!r:.40})" if where and first["type"] != "value_error" else ""
        return f"{where + ': ' if where else ''}{msg}{got}"
    return None
