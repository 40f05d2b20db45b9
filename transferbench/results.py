"""The result record and its store: append-only JSONL, one atomic, locked append per finished run."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 1


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
    time_to_target_s: Optional[float] = None  # from the first optimizer step, eval included (MLPerf)
    target: Optional[float] = None
    train_seconds: Optional[float] = None  # optimizer steps only
    eval_seconds: Optional[float] = None
    setup_seconds: Optional[float] = None  # data + model loading, mode preparation, accelerate prepare
    samples_per_second: Optional[float] = None  # training samples / train_seconds, all processes together
    optimizer_steps: Optional[int] = None
    epochs_run: Optional[float] = None
    params_total: Optional[int] = None
    params_trainable: Optional[int] = None
    peak_memory_bytes: Optional[int] = None
    peak_memory_kind: Optional[str] = None  # cuda_max_allocated | cpu_peak_rss
    flops_estimate: Optional[float] = None
    device_name: Optional[str] = None
    device_count: Optional[int] = None
    num_processes: Optional[int] = None
    mixed_precision: Optional[str] = None
    wall_seconds: Optional[float] = None  # setup + train + eval: what device_hours is billed on
    device_hours: Optional[float] = None
    price_per_device_hour: Optional[float] = None
    price_date: Optional[str] = None
    cost_usd: Optional[float] = None
    status: str = "ok"  # ok | failed | diverged
    error: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the resolved run spec
    env: dict[str, Any] = dataclasses.field(default_factory=dict)  # versions, git commit, host

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False, default=str)


FIELDS = [f.name for f in dataclasses.fields(Result)]


class Store:
    """`<results_dir>/runs.jsonl`. Readers skip (and report) a line that does not parse."""

    def __init__(self, results_dir: str | Path):
        self.dir = Path(results_dir)
        self.path = self.dir / "runs.jsonl"

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"transferbench: warning: {self.path}:{n} is not a JSON record; ignored", file=sys.stderr)
        return out

    def completed(self) -> set[str]:
        return {r["run_id"] for r in self.records() if r.get("status") == "ok" and "run_id" in r}

    def append(self, result: Result) -> None:
        """One write() of one whole line under an exclusive lock, then fsync: a run killed before this
        point leaves nothing; concurrent writers (shells, shards on one disk) never interleave."""
        self.dir.mkdir(parents=True, exist_ok=True)
        data = (result.to_json() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
