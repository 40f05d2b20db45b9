"""End to end through the CLI: records, resume, determinism, a run killed mid-way."""
import dataclasses
import json
import os
import signal
import subprocess
import time

import pytest

from helpers import cli, write_suite
from transferbench.results import Result, Store


@pytest.fixture(scope="module")
def first_run(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    suite = write_suite(tmp / "suite.yaml", tiny_bert, extra="    target: {metric: accuracy, value: 0.0}")
    proc = cli("run", suite, "--results-dir", tmp / "res", "--price-per-device-hour", "2.0")
    return tmp, suite, proc


@pytest.mark.slow
def test_every_mode_writes_one_valid_record(first_run):
    tmp, _, proc = first_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = Store(tmp / "res").records()
    assert sorted(r["mode"] for r in records) == ["finetune", "linear-probe", "lora", "scratch"]
    for r in records:
        assert list(r) == [f.name for f in dataclasses.fields(Result)]  # flat fields first, provenance last, nothing missing
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


@pytest.mark.slow
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
    from transferbench.runners.orchestrate.execute import execute
    from transferbench.runners.orchestrate.suite import expand_runs as plan

    spec = plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_bert, modes="[finetune]")))[0]
    a, b = execute(spec), execute(spec)
    assert a.status == b.status == "ok"
    assert round(a.metric, 4) == round(b.metric, 4) and [p["metric"] for p in a.curve] == [p["metric"] for p in b.curve]
    other = plan(load_suite(write_suite(tmp_path / "t.yaml", tiny_bert, modes="[finetune]", seeds="[1]")))[0]
    assert execute(other).curve != a.curve  # a different seed is a different draw


@pytest.mark.slow
def test_kill_mid_run_leaves_no_partial_record_and_rerun_completes(tmp_path, monkeypatch, capsys):
    """kill -9 the CLI while a run trains (a test task whose `slow` model sleeps each batch), then rerun."""
    from helpers import bench, faulty_suite, start_cli

    from transferbench.runners.cli import main

    suite = faulty_suite(tmp_path, bench("[fine, slow]", ", epochs: 20"), defaults="seeds: [0, 1], batch_size: 30, lr: default")
    store, marker = tmp_path / "res" / "runs.jsonl", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(marker), "FAULT_SLEEP": "0.05"}
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # inside the third run (slow, seed 0: about 15 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = store.read_text().splitlines()
    assert [(json.loads(x)["model"], json.loads(x)["status"]) for x in lines] == [("fine", "ok")] * 2  # whole lines

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    monkeypatch.setenv("FAULT_SLEEP", "0")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--price-per-device-hour", "0"]) == 0
    assert "2 already in" in capsys.readouterr().out
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 4 == len({r["run_id"] for r in records})  # every run exactly once
    assert [(r["model"], r["seed"]) for r in records[2:]] == [("slow", 0), ("slow", 1)]


def test_same_seed_same_subset_and_init(tiny_bert, tmp_path, monkeypatch):
    """Through execute(): the training subset and the initial weights a run trains from depend on its seed only
    (a different mode with the same seed draws the same subset; scratch's init is reproducible)."""
    import torch

    from transferbench.config import load_suite
    from transferbench.runners.train import hf_loop as loop
    from transferbench.runners.orchestrate.execute import execute
    from transferbench.runners.orchestrate.suite import expand_runs as plan

    seen = []

    def capture(spec, task, model, train_set, *args):
        seen.append((list(train_set.indices), {k: v.clone() for k, v in model.state_dict().items()}))
        raise RuntimeError("captured")  # no training needed

    monkeypatch.setattr(loop, "train", capture)
    runs = plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_bert, modes="[scratch, finetune]", seeds="[0, 1]")))
    for spec in [runs[0], runs[0], runs[1], runs[2]]:  # scratch s0, scratch s0, finetune s0, scratch s1
        assert execute(spec).error == "RuntimeError: captured"
    (a, init_a), (b, init_b), (c, _), (d, init_d) = seen
    assert a == b == c and len(a) == 64 and a != d  # same seed, same subset, whatever the mode
    assert all(torch.equal(init_a[k], init_b[k]) for k in init_a)  # same seed, same random init
    assert not all(torch.equal(init_a[k], init_d[k]) for k in init_a)
