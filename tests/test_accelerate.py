"""Data-parallel on 2 CPU processes (gloo) under `accelerate launch`: one record per run, the same metric as
one process within noise, every eval example counted exactly once."""
import pytest
from datasets import load_dataset

from helpers import accelerate_launch, write_suite
from transferbench.builtin import materialize
from transferbench.results import Store


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", "all-minilm-l6-v2", modes="{linear-probe: {lr: 1.0e-2}}",
                        budget="[256]", extra="    epochs: 4\n    batch_size: 32\n    eval_every: 2.0")
    two = accelerate_launch("run", suite, "--results-dir", tmp_path / "two", "--price-per-device-hour", "0")
    assert two.returncode == 0, two.stderr[-3000:]
    from transferbench.runners.cli import main  # the 1-process baseline in this process: no start-up cost

    assert main(["run", str(suite), "--results-dir", str(tmp_path / "one"), "--price-per-device-hour", "0"]) == 0
    (r2,), (r1,) = Store(tmp_path / "two").records(), Store(tmp_path / "one").records()  # written once
    assert r2["num_processes"] == 2 and r1["num_processes"] == 1
    # The effective batch is the suite's batch_size: 2 x 16 per device = 1 x 32, so the same number of steps.
    assert (r2["per_device_batch"], r1["per_device_batch"], r2["grad_accum"], r1["grad_accum"]) == (16, 32, 1, 1)
    assert r2["optimizer_steps"] == r1["optimizer_steps"] == 32  # 256/32 x 4 epochs
    assert r2["train_samples"] == r1["train_samples"] == 256
    assert [p["samples_seen"] for p in r2["curve"]] == [p["samples_seen"] for p in r1["curve"]] == [512, 1024]
    # Every eval example scored exactly once, although 600 does not split into whole eval batches of 2 x 32:
    # accelerate pads the last batch with repeats and gather_for_metrics drops them again.
    eval_split = len(load_dataset("csv", data_files=str(materialize("topics") / "test.csv"))["train"])
    assert 600 % (2 * 2 * 16) and r2["eval_samples"] == r1["eval_samples"] == eval_split == 600
    assert abs(r2["metric"] - r1["metric"]) < 0.05, (r1["metric"], r2["metric"])  # same optimisation, within noise
    assert abs(r2["metrics"]["f1"] - r1["metrics"]["f1"]) < 0.05
    assert r1["metric"] > 0.7  # a pretrained encoder's probe learns: the comparison is not between two chance runs
    assert r2["status"] == r1["status"] == "ok" and r2["stop_reason"] == r1["stop_reason"] == "epochs"
