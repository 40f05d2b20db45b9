"""The result record and its store: append-only JSONL, one atomic, locked append per finished run."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import sys
from pathlib import Path
from typing import Any, Optional

from filelock import lock_descriptor, unlock_descriptor

from .errors import UserError
from . import record_schema
from .record_schema import problem

SCHEMA_VERSION = record_schema.SCHEMA_VERSION  # the schema's version history lives with the schema


@dataclasses.dataclass
class Result:
    """One run's outcome. Flat fields first (trivial CSV export), nested provenance last."""

    schema_version: int
    run_id: str
    suite: str
    task: str
    dataset: str
    model: str
    mode: str
    seed: int
    train_samples: Optional[int]  # examples actually used for training (the budget, resolved)
    metric_name: str
    higher_is_better: bool
    metric: Optional[float] = None  # at the end of training
    best_metric: Optional[float] = None  # best over the curve (optimistic: the eval split picks it)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # all final eval metrics
    eval_samples: Optional[int] = None  # examples scored by the final evaluation (all processes)
    curve: list[dict[str, float]] = dataclasses.field(default_factory=list)  # {step, samples_seen, seconds, metric}
    loss_curve: list[dict[str, float]] = dataclasses.field(default_factory=list)  # {step, loss}: training loss
    time_to_target_s: Optional[float] = None  # from the first optimizer step, eval included (MLPerf)
    target: Optional[float] = None
    train_seconds: Optional[float] = None  # optimizer steps only
    eval_seconds: Optional[float] = None
    setup_seconds: Optional[float] = None  # data + model loading, mode preparation, loaders, accelerate prepare
    samples_per_second: Optional[float] = None  # training samples / train_seconds, all processes together
    optimizer_steps: Optional[int] = None
    epochs_run: Optional[float] = None
    stop_reason: Optional[str] = None  # what ended training: epochs | max_steps | max_seconds | target
    converged: Optional[bool] = None  # had it stopped improving when it ended (transferbench/convergence.py)?
    convergence: Optional[str] = None  # why: the rule that decided and its numbers
    per_device_batch: Optional[int] = None  # as trained (smaller than planned after an out-of-memory retry)
    grad_accum: Optional[int] = None  # as trained: batch_size = per_device_batch x num_processes x grad_accum
    oom_retries: int = 0  # out-of-memory errors survived by halving per_device_batch
    params_total: Optional[int] = None
    params_trainable: Optional[int] = None
    # bytes of what training adds to the base model, in the weights' dtype: a peft model's saved adapter tensors
    # (adapters + the head kept in full), else the trainable parameters (transferbench/peft_modes.adapter_bytes)
    adapter_bytes: Optional[int] = None
    # the learning rate trained at: given, the mode's default, or chosen per run by `lr: auto` / a grid, whose
    # search is in lr_search {kind, grid, scores [{lr, metric, loss}], chosen, steps, validation_samples, seconds};
    # its seconds are in wall_seconds and the cost, not in train/eval/setup seconds or time-to-target
    lr: Optional[float] = None
    lr_search: Optional[dict[str, Any]] = None
    # schedule: plateau: the plateau phase on the budget's own validation part {fit_samples, validation_samples,
    # best_step, best_metric, steps_run, final_steps, stopped (plateau | cap), scorings, cap, floor, seconds, curve};
    # its seconds, like the search's, are in wall_seconds and the cost only
    plateau: Optional[dict[str, Any]] = None
    peak_memory_bytes: Optional[int] = None
    peak_memory_kind: Optional[str] = None  # cuda_max_allocated | cpu_peak_rss
    flops_estimate: Optional[float] = None  # training FLOPs: 6 x params x tokens, or 3 x a counted forward
    peak_flops: Optional[float] = None  # stated dense peak FLOP/s of one device at this precision (peaks.yaml)
    mfu: Optional[float] = None  # flops_estimate / train_seconds / (peak_flops x device_count); None on CPU
    device_name: Optional[str] = None
    device_count: Optional[int] = None
    num_processes: Optional[int] = None
    mixed_precision: Optional[str] = None
    compile: bool = False  # torch.compile (the speed options as trained; also in config.hyper when set)
    channels_last: bool = False
    gradient_checkpointing: bool = False
    max_grad_norm: Optional[float] = None  # gradient clipping as trained (None: none; Ultralytics clips at 10.0)
    wall_seconds: Optional[float] = None  # setup + train + eval: what device_hours is billed on
    # of those, shared work done once for several runs and billed to each (cached features of a benchmark's frozen
    # backbone): counted in train/eval and wall seconds, not spent by this run's process
    charged_seconds: Optional[float] = None
    device_hours: Optional[float] = None
    price_per_device_hour: Optional[float] = None
    price_date: Optional[str] = None
    cost_usd: Optional[float] = None
    # read from hardware energy counters over the run (NVML on GPU, RAPL on CPU where readable); None: not
    # measured, energy_note says why. co2_kg = energy_kwh x grid_gco2_per_kwh / 1000 (transferbench/energy.py)
    energy_kwh: Optional[float] = None
    co2_kg: Optional[float] = None
    grid_gco2_per_kwh: Optional[float] = None
    energy_source: Optional[str] = None  # nvml | rapl | nvml+rapl
    energy_note: Optional[str] = None  # the counters read and their kWh, or why nothing was measured
    saved_model: Optional[str] = None  # the folder holding the final weights (save_models: final)
    # the optimizer step of the mid-run checkpoint this run resumed from after a kill (checkpoint_every), else None
    resumed_at_step: Optional[int] = None
    status: str = "ok"  # ok | failed | diverged
    error: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the resolved run spec
    env: dict[str, Any] = dataclasses.field(default_factory=dict)  # versions, git commit, host

    def to_json(self) -> str:
        """One JSON line; a non-finite number (a NaN metric) is written as null: the store holds valid JSON only."""
        return json.dumps(_finite_or_none(dataclasses.asdict(self)), sort_keys=False, default=str, allow_nan=False)


def _finite_or_none(value):
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int)):  # numpy floats included
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


class StoreTail:
    """Follows a store: the first read parses every line, each later one only the whole lines appended since (the
    claim check before every run reads the store once, not once per run). Lines are checked against the record
    schema (record_schema.py): one that fails is refused (strict: `run` cannot tell whether that run is done) or
    skipped with a warning naming file:line (`report`)."""

    def __init__(self, store: "Store"):
        self.path = store.path
        self.offset = 0  # bytes consumed: whole lines only, so a line being written is read once it is whole
        self.line = 0

    def read(self, strict: bool = False, partial: bool = False) -> list[dict[str, Any]]:
        """The records of the lines appended since the last read; `partial`: also a last line without its newline
        (a torn line when nobody is writing)."""
        if not self.path.exists():
            return []
        if not self.path.is_file():
            raise UserError(f"{self.path} is not a file; give --results-dir a folder of your own")
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = len(data) if partial else data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            self.line += 1
            record = self._parse(raw.decode("utf-8", errors="replace"), strict)
            if record is not None:
                out.append(record)
        return out

    def _parse(self, line: str, strict: bool) -> Optional[dict[str, Any]]:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError included
            record = None
        if not isinstance(record, dict):
            why, note = "a torn or hand-edited line", "is not a JSON record"
        elif not isinstance(record.get("run_id"), str) or not record["run_id"]:
            # resume and merging key on run_id: a line without one is as unusable as a torn line
            why, note = "its run_id is missing, null or not a string", "has no run_id (missing, null or not a string)"
        else:
            why = problem(record)
            if why is None:
                return record
            note = f"is not a usable result record ({why})"
        if strict:
            raise UserError(f"{self.path}:{self.line} is not a result record ({why}); fix or delete that line, "
                            f"then rerun")
        print(f"transferbench: warning: {self.path}:{self.line} {note}; ignored", file=sys.stderr)
        return None


class Store:
    """`<results_dir>/runs.jsonl`. Reports skip (and warn about) a line that does not parse; a run refuses
    to start on such a store (strict), since it cannot tell whether that line's run is done."""

    def __init__(self, results_dir: str | Path):
        self.dir = Path(results_dir)
        self.path = self.dir / "runs.jsonl"

    def records(self, strict: bool = False) -> list[dict[str, Any]]:
        return self.tail().read(strict, partial=True)

    def tail(self) -> "StoreTail":
        """A reader that returns, at each read, only the lines appended since its last one."""
        return StoreTail(self)

    def runs(self, strict: bool = False) -> list[dict[str, Any]]:
        """The store's runs, each run_id once (`dedupe`): what `run` resumes from and `report` tabulates."""
        return dedupe(self.records(strict))

    def completed(self, strict: bool = False) -> set[str]:
        return {r["run_id"] for r in self.runs(strict) if r.get("status") == "ok"}

    def append(self, result: Result) -> None:
        """One whole line under an exclusive lock, then fsync: a run killed before this point leaves nothing;
        concurrent writers (shells, shards on one disk) never interleave."""
        data = (result.to_json() + "\n").encode()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"run {result.run_id} finished but cannot be recorded: {self.path}: {err.strerror}; "
                            f"fix that, then rerun (the run trains again)") from None
        size = None
        try:
            # filelock's primitive (flock on POSIX) on the store's own descriptor: writers of every version
            # contend on runs.jsonl itself, and no lock file appears beside it
            lock_descriptor(fd, poll_interval=0.01)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn last line (disk full, hand edit) must not swallow this record
            while data:  # one write() in practice; the loop only guards against a short write
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as err:  # ENOSPC, EFBIG, EIO...: cut back to the last whole line, say so in one line
            if size is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
            raise UserError(f"run {result.run_id} finished but cannot be recorded: writing {self.path} failed "
                            f"({err.strerror or err}); the store was cut back to its last whole line: free space "
                            f"or fix the disk, then rerun (the run trains again)") from None
        finally:
            with contextlib.suppress(OSError):
                unlock_descriptor(fd)
            os.close(fd)


def dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run_id once, in order of first appearance: its first `ok` record wins, else its last failure (a
    run retried after failing, concatenated shards, two invocations that both recorded it)."""
    chosen: dict[str, dict] = {}
    for record in records:
        old = chosen.get(record["run_id"])
        if old is None or old.get("status") != "ok":
            chosen[record["run_id"]] = record
    return list(chosen.values())
