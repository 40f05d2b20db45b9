"""Running a suite end to end: one valid record per mode, resume, determinism (same seed, same subset, init and
metric), injected faults (out-of-memory, NaN) recorded as failed rows while the suite goes on, what stopped each
run, shards. Faults come from the tiny XOR task of tests/helpers.py, whose model name says which fault to inject."""
import dataclasses

import pytest

from helpers import bench, cli, faulty_suite, run_main, write_suite
from transferbench.results import Result, Store


def test_oom_and_nan_are_recorded_and_the_suite_goes_on(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[nan, oom, oom-above-10, fine]") + bench("[cpu-oom]", ", oom_retries: 0"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0") == 1
    out, err = capsys.readouterr()  # exit 1: some run failed, the suite went on
    assert "Traceback" not in err and "[5/5] faulty fine scratch" not in out and "[4/5] faulty fine scratch" in out
    runs = {r["model"]: r for r in Store(tmp_path / "res").records(strict=True)}
    assert list(runs) == ["nan", "oom", "oom-above-10", "fine", "cpu-oom"]  # every run, in order, once

    assert runs["nan"]["status"] == "diverged" and "NaN or infinite by step 10" in runs["nan"]["error"]
    assert runs["nan"]["metric"] is None

    oom = runs["oom"]
    assert oom["status"] == "failed" and oom["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert "still out of memory after 1 retry at per-device batch 10" in oom["error"]
    assert (oom["oom_retries"], oom["per_device_batch"], oom["grad_accum"]) == (1, 10, 2)
    assert "traceback" in oom["env"] and oom["wall_seconds"] > 0

    # Retried at half the per-device batch with twice the accumulation: the same optimisation as `fine`.
    fine, retried = runs["fine"], runs["oom-above-10"]
    assert fine["status"] == retried["status"] == "ok"
    assert (fine["per_device_batch"], fine["grad_accum"], fine["oom_retries"]) == (20, 1, 0)
    assert (retried["per_device_batch"], retried["grad_accum"], retried["oom_retries"]) == (10, 2, 1)
    assert retried["optimizer_steps"] == fine["optimizer_steps"] == 2 * 15  # 300 / 20 a epoch
    assert retried["config"]["hyper"]["grad_accum"] == 1  # the record keeps the run as planned
    assert [p["metric"] for p in retried["curve"]] == [p["metric"] for p in fine["curve"]]
    assert retried["metric"] == fine["metric"] > 0.5
    assert fine["stop_reason"] == retried["stop_reason"] == "epochs"

    cpu = runs["cpu-oom"]  # oom_retries: 0 -> no retry
    assert cpu["status"] == "failed" and "DefaultCPUAllocator: can't allocate memory" in cpu["error"]
    assert cpu["oom_retries"] == 0 and cpu["per_device_batch"] == 20


def _execute(tmp_path, monkeypatch, body, defaults="seeds: [0], epochs: 2, batch_size: 30, lr: 0.05"):
    """Every run of a faulty suite, in this process (no start-up cost)."""
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.execute import execute
    from transferbench.runners.orchestrate.plan import plan_runs as plan

    suite = faulty_suite(tmp_path, body, defaults)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(tmp_path / "marker"))
    return [execute(spec) for spec in plan(load_suite(suite))]


def test_budgets_and_what_stopped_each_run(tmp_path, monkeypatch):
    body = (bench("[fine]", ", max_steps: 3")  # 10 steps an epoch at batch 30
            + bench("[fine]", ", epochs: 1.5")
            + bench("[fine]", ", epochs: 30, eval_every: 0.5, target: {metric: accuracy, value: 0.6, stop: true}")
            + bench("[fine]", ", epochs: 3, eval_every: 0.5, target: {metric: accuracy, value: 0.6}")
            + bench("[slow]", ", epochs: 100, max_seconds: 0.4"))
    steps, epochs, target, target_nostop, timed = _execute(tmp_path, monkeypatch, body)
    assert all(r.status == "ok" for r in (steps, epochs, target, target_nostop, timed))

    assert (steps.stop_reason, steps.optimizer_steps, steps.epochs_run) == ("max_steps", 3, 0.3)
    assert (epochs.stop_reason, epochs.optimizer_steps, epochs.epochs_run) == ("epochs", 15, 1.5)

    # stop: true -> ends at the first evaluation that reaches the target; time-to-target is that point's time
    values = [p["metric"] for p in target.curve]
    assert target.stop_reason == "target" and values[-1] >= 0.6 and all(v < 0.6 for v in values[:-1])
    assert target.optimizer_steps == target.curve[-1]["step"] < 300 and target.metric == values[-1]
    assert target.time_to_target_s == target.curve[-1]["seconds"]
    # without stop: time-to-target recorded, training goes on to the end of its budget
    assert target_nostop.stop_reason == "epochs" and target_nostop.optimizer_steps == 30
    reached = next(p for p in target_nostop.curve if p["metric"] >= 0.6)
    assert target_nostop.time_to_target_s == reached["seconds"]

    assert timed.stop_reason == "max_seconds" and 0 < timed.optimizer_steps < 100 * 10
    assert timed.curve[-1]["seconds"] >= 0.4 and timed.train_seconds + timed.eval_seconds >= 0.4


def test_shards_partition_the_run_ids_exactly(tiny_bert, tmp_path, capsys):
    from transferbench.runners.cli import main

    suite = write_suite(tmp_path / "s.yaml", tiny_bert, seeds="[0, 1, 2]", budget="[32, 64]")  # 24 runs

    def ids(*shard):
        assert main(["run", str(suite), "--dry-run", *shard]) == 0
        return [line.split()[0] for line in capsys.readouterr().out.splitlines()[:-1]]

    every = ids()
    parts = [ids("--shard", f"{i}/3") for i in (1, 2, 3)]
    assert len(every) == 24 and sorted(sum(parts, [])) == sorted(every)
    assert [len(p) for p in parts] == [8, 8, 8] and not set(parts[0]) & set(parts[1])


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
    from transferbench.runners.orchestrate.plan import plan_runs as plan

    spec = plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_bert, modes="[finetune]")))[0]
    a, b = execute(spec), execute(spec)
    assert a.status == b.status == "ok"
    assert round(a.metric, 4) == round(b.metric, 4) and [p["metric"] for p in a.curve] == [p["metric"] for p in b.curve]
    other = plan(load_suite(write_suite(tmp_path / "t.yaml", tiny_bert, modes="[finetune]", seeds="[1]")))[0]
    assert execute(other).curve != a.curve  # a different seed is a different draw


def test_same_seed_same_subset_and_init(tiny_bert, tmp_path, monkeypatch):
    """Through execute(): the training subset and the initial weights a run trains from depend on its seed only
    (a different mode with the same seed draws the same subset; scratch's init is reproducible)."""
    import torch

    from transferbench.config import load_suite
    from transferbench.runners.train import hf_loop as loop
    from transferbench.runners.orchestrate.execute import execute
    from transferbench.runners.orchestrate.plan import plan_runs as plan

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
