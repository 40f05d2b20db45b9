"""End to end through the CLI: records, resume, determinism, a run killed mid-way."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import cli, write_suite
from transferbench.results import FIELDS, Store


@pytest.fixture(scope="module")
def first_run(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    suite = write_suite(tmp / "suite.yaml", tiny_bert, extra="    target: {metric: accuracy, value: 0.0}")
    proc = cli("run", suite, "--results-dir", tmp / "res", "--price-per-device-hour", "2.0")
    return tmp, suite, proc


def test_every_mode_writes_one_valid_record(first_run):
    tmp, _, proc = first_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = Store(tmp / "res").records()
    assert sorted(r["mode"] for r in records) == ["finetune", "linear-probe", "lora", "scratch"]
    for r in records:
        assert list(r) == FIELDS  # flat fields first, provenance last, nothing missing
        assert r["status"] == "ok" and r["error"] is None
        assert r["train_samples"] == 64 and r["eval_samples"] == 600  # the whole held-out split, once
        assert 0.0 <= r["metric"] <= 1.0 and r["metric"] == r["curve"][-1]["metric"] == r["metrics"]["accuracy"]
        assert r["best_metric"] == max(p["metric"] for p in r["curve"])
        assert r["optimizer_steps"] == 4 and r["curve"][-1]["samples_seen"] == 64  # 64 examples / batch 16
        assert r["time_to_target_s"] is not None and r["time_to_target_s"] <= r["curve"][0]["seconds"]
        assert r["samples_per_second"] == pytest.approx(64 / r["train_seconds"], rel=0.01)
        assert r["wall_seconds"] >= r["train_seconds"] + r["eval_seconds"]
        assert r["device_hours"] == pytest.approx(r["wall_seconds"] * r["device_count"] / 3600)
        assert r["cost_usd"] == pytest.approx(r["device_hours"] * 2.0)
        assert r["num_processes"] == 1 and r["device_name"].startswith("CPU")
        assert r["peak_memory_bytes"] > 10 * 2**20 and r["flops_estimate"] > 0
        assert r["env"]["versions"]["torch"] and r["config"]["model"] == r["model"]
    share = {r["mode"]: r["params_trainable"] / r["params_total"] for r in records}
    assert share["scratch"] == share["finetune"] == 1.0
    assert share["linear-probe"] < share["lora"] < 0.5
    assert "| finetune |" in proc.stdout and "Δ vs scratch" in proc.stdout  # the leaderboard is printed


def test_second_invocation_resumes_everything(first_run):
    tmp, suite, _ = first_run
    before = (tmp / "res" / "runs.jsonl").read_text()
    proc = cli("run", suite, "--results-dir", tmp / "res")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 already in" in proc.stdout and "0 to run" in proc.stdout
    assert (tmp / "res" / "runs.jsonl").read_text() == before
    assert "| lora |" in proc.stdout


def test_same_seed_same_metric(tiny_bert, tmp_path):
    from transferbench.config import load_suite
    from transferbench.runners.suite import execute, plan

    spec = plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_bert, modes="[finetune]")))[0]
    a, b = execute(spec), execute(spec)
    assert a.status == b.status == "ok"
    assert round(a.metric, 4) == round(b.metric, 4) and [p["metric"] for p in a.curve] == [p["metric"] for p in b.curve]
    other = plan(load_suite(write_suite(tmp_path / "t.yaml", tiny_bert, modes="[finetune]", seeds="[1]")))[0]
    assert execute(other).curve != a.curve  # a different seed is a different draw


def test_kill_mid_run_leaves_no_partial_record_and_rerun_completes(tiny_bert, tmp_path):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[linear-probe, finetune]", seeds="[0, 1]",
                        budget="[256]", extra="    epochs: 40")  # a few seconds a run: time to kill one
    store = tmp_path / "res" / "runs.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "transferbench", "run", str(suite), "--results-dir",
                             str(tmp_path / "res")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (store.exists() and store.read_text().count("\n") >= 1):
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the second run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = store.read_text().splitlines()
    assert 1 <= len(lines) < 4
    assert all(json.loads(line)["status"] == "ok" for line in lines)  # whole lines only
    again = cli("run", suite, "--results-dir", tmp_path / "res")
    assert again.returncode == 0, again.stderr[-2000:]
    ids = [json.loads(line)["run_id"] for line in store.read_text().splitlines()]
    assert len(ids) == 4 == len(set(ids))  # every run exactly once
