"""Data-parallel on 2 CPU processes (gloo) under `accelerate launch`: one record per run, the same metric as
one process within noise, every eval example counted exactly once."""
import os
import subprocess
import sys
from pathlib import Path

from helpers import cli, write_suite
from transferbench.results import Store


def test_two_process_run_matches_one_process(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", "all-minilm-l6-v2", modes="{linear-probe: {lr: 1.0e-2}}",
                        budget="[256]", extra="    epochs: 4\n    batch_size: 32")
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    two = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "transferbench", "run",
                          str(suite), "--results-dir", str(tmp_path / "two"), "--price-per-device-hour", "0"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    one = cli("run", suite, "--results-dir", tmp_path / "one", "--price-per-device-hour", "0")
    assert one.returncode == 0, one.stderr[-3000:]
    (r2,), (r1,) = Store(tmp_path / "two").records(), Store(tmp_path / "one").records()  # written once
    assert r2["num_processes"] == 2 and r1["num_processes"] == 1
    assert r2["eval_samples"] == r1["eval_samples"] == 600  # gather_for_metrics: no duplicate, no drop
    assert r2["optimizer_steps"] == r1["optimizer_steps"] == 32  # same effective batch: 256/32 x 4 epochs
    assert r2["train_samples"] == r1["train_samples"] == 256
    assert abs(r2["metric"] - r1["metric"]) < 0.05, (r1["metric"], r2["metric"])
