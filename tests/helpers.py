"""Helpers shared by the tests: fixture suites and stores, a tiny task module outside the package, the CLI in this
process, in a subprocess and under `accelerate launch`."""
import json
import os
import subprocess
import sys
from pathlib import Path


# Seconds a test waits for a subprocess or for a file it starts: a guard against a hang, never a performance bound,
# so generous that a loaded machine cannot decide a result with it (test timings belong to benchmarks/perf).
HANG_GUARD_S = 1800


def write_suite(path: Path, model: str, modes="[scratch, finetune, lora, linear-probe]", seeds="[0]",
                extra: str = "", budget: str = "[64]", dataset: str = "builtin:topics") -> Path:
    path.write_text(f"""
name: fixture
defaults: {{seeds: {seeds}, epochs: 1, batch_size: 16, eval_every: 1.0, lr: default}}
benchmarks:
  - task: text-classification
    dataset: {dataset}
    models: [{model}]
    task_args: {{max_length: 24}}
    modes: {modes}
    train_samples: {budget}
{extra}""")
    return path


def assert_json_close(got, want, rel: float = 1e-4, path: str = "") -> None:
    """Two JSON values equal, numbers within `rel` (curve fits and bootstrap percentiles are not bit-identical across
    CPUs, so a number written by the planner may differ in its last digit on another machine)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            assert_json_close(got[k], want[k], rel, f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_json_close(g, w, rel, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool) and isinstance(got, (int, float)):
        assert abs(got - want) <= rel * max(abs(want), 1e-3), f"{path}: {got!r} != {want!r}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def write_store(folder: Path, records) -> Path:
    """A results folder whose runs.jsonl holds `records` (dicts), one JSON line each."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def result(run_id: str, **fields):
    """The smallest valid Result; `fields` override or add any field."""
    from transferbench.results import Result

    return Result(**{**dict(schema_version=2, run_id=run_id, suite="s", task="t", dataset="d", model="m",
                            mode="scratch", seed=0, train_samples=1, metric_name="accuracy", higher_is_better=True),
                     **fields})


# A task module written next to a suite and imported by its `imports:` (in this process, or in a subprocess
# through PYTHONPATH), so it must stand alone. __TASK__ and __HIDDEN__ are filled in by write_xor_task.
XOR_TASK = '''
import os
import pathlib
import time

import torch
from transferbench.tasks import Task, TaskData, register_task


class Net(torch.nn.Module):
    """XOR classifier. Its name injects a fault: nan (loss), oom (always, in training), oom-above-N (a training
    batch larger than N rows), cpu-oom (the CPU allocator's message), slow (FAULT_SLEEP seconds a batch), die
    (SIGKILL of its own process in training), die-once (the same, only while FAULT_MARKER does not exist); any
    other name trains normally. FAULT_MARKER gets one line per batch of a slow model."""

    def __init__(self, fault):
        super().__init__()
        self.fault = fault
        self.body = torch.nn.Linear(2, __HIDDEN__)
        self.classifier = torch.nn.Linear(__HIDDEN__, 2)

    def forward(self, x, labels):
        from transformers.modeling_outputs import SequenceClassifierOutput

        big = self.fault.startswith("oom-above-") and len(x) > int(self.fault.rsplit("-", 1)[1])
        if self.training and (self.fault == "oom" or big):
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} rows (injected)")
        if self.training and self.fault == "cpu-oom":
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes (injected)")
        if self.training and self.fault == "die-once" and not pathlib.Path(os.environ["FAULT_MARKER"]).exists():
            pathlib.Path(os.environ["FAULT_MARKER"]).touch()
            os.kill(os.getpid(), 9)  # the process running it killed mid-run (kill -9), once
        if self.training and self.fault == "die":
            os.kill(os.getpid(), 9)
        if self.fault == "slow":  # one line in FAULT_MARKER per batch: how many steps it began
            with open(os.environ["FAULT_MARKER"], "a") as marker:
                marker.write("batch\\n")
            time.sleep(float(os.environ.get("FAULT_SLEEP", "0.05")))
        logits = self.classifier(torch.relu(self.body(x)))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if self.fault == "nan":
            loss = loss * float("nan")
        return SequenceClassifierOutput(loss=loss, logits=logits)


@register_task
class Xor(Task):
    name = "__TASK__"
    lora_targets = {None: ["body"]}

    def load_data(self, dataset, model):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(400, 2, generator=g)
        y = ((x[:, 0] > 0.5) ^ (x[:, 1] > 0.5)).long()
        rows = [{"x": a, "labels": b} for a, b in zip(x, y)]
        collate = lambda b: {"x": torch.stack([r["x"] for r in b]), "labels": torch.stack([r["labels"] for r in b])}
        return TaskData(rows[:300], rows[300:], collate, ["0", "1"], identity="xor")

    def build_model(self, model, labels, pretrained):
        return Net(model)
'''


def write_xor_task(folder: Path, module: str, task: str, hidden: int) -> Path:
    """folder/module.py registering task `task`: XOR of two uniform features (300 train / 100 eval rows), a
    2-`hidden`-2 MLP whose model name can inject a fault (see Net), no dataset or checkpoint needed."""
    path = folder / f"{module}.py"
    path.write_text(XOR_TASK.replace("__TASK__", task).replace("__HIDDEN__", str(hidden)))
    return path


def faulty_suite(tmp_path: Path, body: str, defaults: str = "seeds: [0], epochs: 2, batch_size: 20, lr: 0.05") -> Path:
    """A suite of the `faulty` XOR task (module faulty_task.py beside it); `body` is its benchmark lines (bench)."""
    write_xor_task(tmp_path, "faulty_task", "faulty", hidden=16)
    path = tmp_path / "s.yaml"
    path.write_text(f"name: faults\nimports: [faulty_task]\ndefaults: {{{defaults}}}\nbenchmarks:\n{body}")
    return path


def bench(models: str, extra: str = "") -> str:
    """One benchmark of faulty_suite: the model names pick the faults."""
    return f"  - {{task: faulty, dataset: builtin:unused, models: {models}, modes: [scratch]{extra}}}\n"


def run_main(*args) -> int:
    """The CLI in this process (a subprocess would pay ~10 s of imports on this machine)."""
    from transferbench.runners.cli import main

    return main([str(a) for a in args])


def cli(*args, env=None, timeout=HANG_GUARD_S):
    """Run the real console entry point in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "transferbench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def start_cli(*args, env=None, **popen_kwargs) -> subprocess.Popen:
    """The console entry point in a subprocess that keeps running (to be signalled or killed)."""
    return subprocess.Popen([sys.executable, "-m", "transferbench", *map(str, args)],
                            env={**os.environ, **(env or {})}, **popen_kwargs)


def accelerate_launch(*args, processes: int = 2, timeout=HANG_GUARD_S) -> subprocess.CompletedProcess:
    """`accelerate launch -m transferbench ARGS` data-parallel over `processes` CPU processes (gloo)."""
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    return subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines",
                           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "transferbench",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "ACCELERATE_USE_CPU": "1"})


# A checkpoint whose config names its own code (for the trust_remote_code tests and the bad-input table).
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


# The XOR suite of the reliability table and the claims tests, and the store record they start from.
GOOD_BENCH = bench("[fine]")


KEEP = result("keep", metric=0.5, best_metric=0.5, status="ok", suite="faults", task="faulty", model="fine",
              dataset="builtin:unused", curve=[{"step": 1, "samples_seen": 20, "seconds": 0.1, "metric": 0.5}]).to_json()


def xor_suite(tmp, text=None, head="", defaults="seeds: [0], epochs: 1, batch_size: 20, lr: 0.05", body=GOOD_BENCH):
    """The XOR suite (optionally with `head` lines before its benchmarks, or replaced by `text`)."""
    path = faulty_suite(tmp, body, defaults)
    if head:
        path.write_text(path.read_text().replace("benchmarks:\n", head + "benchmarks:\n"))
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_args(tmp, *extra):
    return ["run", tmp / "s.yaml", "--results-dir", tmp / "res", "--price-per-device-hour", "0", *extra]


# A fixture store for the report tests: two budgets, four modes, three seeds.
DEVICE_HOURS = {"scratch": 0.01, "finetune": 0.01, "lora": 0.006, "linear-probe": 0.004}


def rec(mode, seed, metric, budget=256, **kw):
    """A result record as the store holds it; cost = device-hours × $2."""
    dh = DEVICE_HOURS[mode]
    curve = [{"step": 1, "samples_seen": budget // 2, "seconds": 1.0 + seed, "metric": None if metric is None else
              metric / 2}, {"step": 2, "samples_seen": budget, "seconds": 2.5 + seed, "metric": metric}]
    base = dict(schema_version=1, run_id=f"{mode}-{budget}-{seed}", suite="fixture", task="text-classification",
                dataset="builtin:topics", model="m", mode=mode, seed=seed, train_samples=budget,
                metric_name="accuracy", higher_is_better=True, metric=metric, best_metric=metric,
                metrics={"accuracy": metric}, curve=curve, target=0.9, time_to_target_s=None, train_seconds=10.0,
                samples_per_second=100.0, params_total=1000, params_trainable=1000, peak_memory_bytes=2**30,
                device_name="CPU: x", device_count=1, num_processes=1, mixed_precision="no", device_hours=dh,
                cost_usd=2 * dh, price_per_device_hour=2.0, price_date="2026-11-25", status="ok", error=None,
                started_at="2026-11-25T10:00:00", finished_at="2026-11-25T10:01:00",
                config={"suite": "fixture", "task": "text-classification", "model": "m", "mode": mode, "seed": seed,
                        "train_samples": budget, "hyper": {"lr": 1e-3, "epochs": 1}, "price_per_device_hour": None},
                env={"versions": {"python": "3.11.2", "torch": "2.14.1"}, "git_commit": "abc123", "host": "h"})
    return {**base, **kw}


def fixture_records():
    """Two budgets, four modes, 3 seeds; one failed run, one run without an evaluation, one single-seed cell."""
    out = [rec("scratch", s, m, 64) for s, m in enumerate([0.25, 0.27, 0.29])]
    out += [rec("finetune", s, m, 64) for s, m in enumerate([0.80, 0.86, 0.83])]
    out += [rec("lora", s, m, 64, params_trainable=3) for s, m in enumerate([0.81, 0.82, 0.83])]
    out += [rec("linear-probe", 0, None, 64, status="failed", error="RuntimeError: boom", train_samples=None,
                device_hours=0.0, cost_usd=0.0)]
    out += [rec("scratch", s, m) for s, m in enumerate([0.90, 0.92, 0.94])]
    out += [rec("finetune", s, m, time_to_target_s=tt) for s, m, tt in zip(range(3), [0.91, 0.95, 0.93], [4, 6, 5])]
    out += [rec("lora", 0, 0.89, params_trainable=3)]
    out += [rec("linear-probe", 0, None, curve=[])]  # trained, never evaluated
    return out
