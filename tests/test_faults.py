"""Faults and budgets: injected out-of-memory and NaN, Ctrl-C, torn store lines, unsafe checkpoints and code,
stop reasons, shards. Faults come from a tiny test-only task registered through the suite's `imports:` hook,
whose model name says which fault to inject, so every fault is deterministic and a run takes a second."""
import json
import os
import signal
import subprocess
import time

import pytest

from helpers import bench, faulty_suite, result, run_main, start_cli, write_suite
from transferbench.errors import UserError
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
    from transferbench.runners.orchestrate.suite import expand_runs as plan

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


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_step_and_the_store_stays_whole(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[fine]") + bench("[slow]", ", epochs: 20"))  # slow: ~15 s
    marker, store = tmp_path / "marker", tmp_path / "res" / "runs.jsonl"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(marker), "FAULT_SLEEP": "0.05"}
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the slow run is training
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.perf_counter() - sent < 5  # after the current step, not at the end of the run
    assert proc.returncode == 130, err[-3000:]
    assert "stopping after the current step" in err and "stopped by SIGINT" in err and "Traceback" not in err
    (line,) = store.read_text().splitlines()  # the finished run only, as one whole line
    assert json.loads(line)["model"] == "fine" and json.loads(line)["status"] == "ok"

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    monkeypatch.setenv("FAULT_SLEEP", "0")
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0") == 0
    assert "1 already in" in capsys.readouterr().out  # the interrupted run is redone, the finished one kept
    records = Store(tmp_path / "res").records(strict=True)
    assert [r["model"] for r in records] == ["fine", "slow"] and records[1]["status"] == "ok"


def test_a_torn_last_line_never_swallows_the_next_record(tmp_path):
    store = Store(tmp_path)
    store.append(result("a"))
    with open(store.path, "a") as f:
        f.write('{"run_id": "b", "sta')  # disk full, or a hand edit, left half a line
    store.append(result("c"))
    assert [r["run_id"] for r in store.records()] == ["a", "c"]  # lenient: reports skip the torn line
    with pytest.raises(UserError, match=r"runs.jsonl:2 is not a result record .* fix or delete that line"):
        store.completed(strict=True)  # a run refuses: line 2 might have been a finished run


def test_version_1_records_still_load(tmp_path):
    old = {k: v for k, v in json.loads(result("old").to_json()).items()
           if k not in ("stop_reason", "per_device_batch", "grad_accum", "oom_retries")}
    (tmp_path / "runs.jsonl").write_text(json.dumps({**old, "schema_version": 1}) + "\n")
    (record,) = Store(tmp_path).records(strict=True)
    assert Result(**record).stop_reason is None and Result(**record).oom_retries == 0


def test_run_ids_of_suites_without_the_new_keys_are_unchanged():
    from transferbench.config import Hyper, RunSpec, Target

    spec = RunSpec(suite="s", task="t", dataset={"source": "d"}, model="m", mode="scratch", seed=0, hyper=Hyper(),
                   target=Target(metric="accuracy", value=0.9))
    assert spec.run_id == "5f38bfc589c76686"  # as computed before `stop` and `oom_retries` existed
    assert spec.model_copy(update={"oom_retries": 3}).run_id == spec.run_id  # a fault policy, not the run
    stopping = spec.model_copy(update={"target": Target(metric="accuracy", value=0.9, stop=True)})
    assert stopping.run_id != spec.run_id  # stopping at the target changes what is measured


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


def test_shard_stores_merge_by_concatenation(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[fine, also-fine]"), defaults="seeds: [0, 1, 2], epochs: 1, batch_size: 30, lr: default")
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in (1, 2):
        assert run_main("run", suite, "--shard", f"{i}/2", "--results-dir", tmp_path / f"shard{i}") == 0
    parts = [(tmp_path / f"shard{i}" / "runs.jsonl").read_text() for i in (1, 2)]
    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "runs.jsonl").write_text("".join(parts))  # cat shard*/runs.jsonl > all/runs.jsonl
    capsys.readouterr()
    assert run_main("run", suite, "--results-dir", tmp_path / "all") == 0
    assert "6 runs, 6 already in" in capsys.readouterr().out  # the merged store completes the whole suite
    assert [len(p.splitlines()) for p in parts] == [3, 3]
    assert (tmp_path / "all" / "runs.jsonl").read_text() == "".join(parts)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does on load
        return (os.system, (f"touch {self.marker}",))


def test_pickled_weights_never_run_code(tiny_bert, tmp_path):
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from transferbench import models

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bert, ckpt)
    (ckpt / "model.safetensors").unlink()
    state = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).state_dict()
    torch.save({**state, "evil": _Evil(tmp_path / "pwned")}, ckpt / "pytorch_model.bin", pickle_protocol=2)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|unsupported global"):
        models.from_pretrained(AutoModelForSequenceClassification, str(ckpt), num_labels=2)
    assert not (tmp_path / "pwned").exists()


CUSTOM_CODE = """
import os, pathlib
pathlib.Path(os.environ["CUSTOM_CODE_MARKER"]).touch()
from transformers import BertConfig


class CustomConfig(BertConfig):
    model_type = "custom-bert"
"""


def custom_code_checkpoint(path) -> str:
    """A checkpoint whose config names its own code (auto_map): loading it runs custom_config.py."""
    from transformers import BertConfig

    path.mkdir()
    (path / "custom_config.py").write_text(CUSTOM_CODE)
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).to_dict()
    config.update(model_type="custom-bert", auto_map={"AutoConfig": "custom_config.CustomConfig"})
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def test_remote_code_runs_only_for_a_model_the_suite_trusts(tmp_path, monkeypatch):
    from transformers import AutoConfig

    from transferbench import models

    ref = custom_code_checkpoint(tmp_path / "custom")
    monkeypatch.setenv("CUSTOM_CODE_MARKER", str(tmp_path / "ran"))
    with pytest.raises(UserError, match=r"needs its own code .* `trust_remote_code: \['"):
        models.from_pretrained(AutoConfig, ref)
    assert not (tmp_path / "ran").exists()
    try:
        models.trust_remote_code([ref])
        assert models.from_pretrained(AutoConfig, ref).model_type == "custom-bert"
        assert (tmp_path / "ran").exists()
    finally:
        models.trust_remote_code([])
