"""report_to: one tracker run per transferbench run, through accelerate's log_with, named benchmark/model/mode/budget/
seed with its run_id in the config (and, for TensorBoard's folder, its first 8 characters); the event files
hold the record's numbers (per-step training loss and learning rate, every evaluation). Read back with
TensorBoard's own EventAccumulator."""
from pathlib import Path

import pytest
import torch
import yaml

from helpers import run_main, write_suite
from transferbench.config import load_suite
from transferbench.results import Store

# 64 examples / batch 16 = 4 optimizer steps an epoch (8 batches with grad_accum 2), 3 epochs, an evaluation
# every epoch: 12 steps, evaluated at 4, 8 and 12; LOG_EVERY (10) falls inside, so buffered logging is flushed
# both at a LOG_EVERY step and at evaluations
MODES = "{finetune: {lr: 1.0e-4}, lora: {lr: 1.0e-3, grad_accum: 2}}"
EXTRA = "    epochs: 3\n    report_to: [tensorboard]\n"


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _linear_lr(lr: float, step: int, total: int, warmup: int) -> float:
    """transformers' linear schedule at the rate optimizer step `step` (1-based) used."""
    k = step - 1
    return lr * (k / warmup if k < warmup else max(0.0, (total - k) / (total - warmup)))


@pytest.fixture(scope="module")
def tracked(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trackers")
    suite = write_suite(tmp / "s.yaml", tiny_bert, modes=MODES, extra=EXTRA)
    assert run_main("run", suite, "--results-dir", tmp / "res") == 0
    return tmp, suite, {r["mode"]: r for r in Store(tmp / "res").records()}


def _folder(tmp, r):
    """The run's TensorBoard folder: benchmark/model/mode/budget/seed-<run_id[:8]> (the model: its folder's name)."""
    return tmp / "res" / "trackers" / "topics" / Path(r["model"]).name / r["mode"] / "n64" / f"seed0-{r['run_id'][:8]}"


def test_one_tensorboard_run_per_run_named_readably(tracked, tiny_bert):
    tmp, _, records = tracked
    runs = sorted(p.parent.parent for p in (tmp / "res" / "trackers").rglob("hparams.yml"))
    assert runs == sorted(_folder(tmp, r) for r in records.values()) and len(runs) == 2
    assert Path(tiny_bert).name.startswith("tiny-bert")
    for r in records.values():  # the resolved run config, as the tracker's hyper-parameters
        (hparams,) = _folder(tmp, r).glob("*/hparams.yml")
        config = yaml.safe_load(hparams.read_text())
        assert config["run_id"] == r["run_id"] and config["mode"] == r["mode"]
        assert config["hyper.lr"] == r["config"]["hyper"]["lr"] and config["hyper.report_to"] == "tensorboard"


def test_event_scalars_are_the_records_numbers(tracked):
    tmp, _, records = tracked
    for mode, r in records.items():
        scalars = _scalars(_folder(tmp, r))
        steps = r["optimizer_steps"]
        assert steps == 12
        # one training loss and one learning rate per optimizer step
        loss, lr = scalars["train/loss"], scalars["train/learning_rate"]
        assert [s for s, _ in loss] == [s for s, _ in lr] == list(range(1, steps + 1))
        hyper = r["config"]["hyper"]
        assert [v for _, v in lr] == pytest.approx([_linear_lr(hyper["lr"], s, steps, int(0.1 * steps))
                                                   for s in range(1, steps + 1)], rel=1e-6)
        # the record's loss_curve holds every batch (fewer than 50); a step's loss is the mean of its batches
        batches = [p["loss"] for p in r["loss_curve"]]
        accum = hyper.get("grad_accum", 1)
        assert len(batches) == steps * accum
        per_step = [sum(batches[i:i + accum]) / accum for i in range(0, len(batches), accum)]
        assert [v for _, v in loss] == pytest.approx(per_step, abs=2e-5)  # the record rounds to 5 decimals
        # every evaluation, at its step, with the curve's value; the last one is the record's final metrics
        assert [(s, pytest.approx(v, abs=1e-6)) for s, v in scalars["eval/accuracy"]] == \
            [(p["step"], p["metric"]) for p in r["curve"]]
        assert [p["step"] for p in r["curve"]] == [4, 8, 12]
        for name, value in r["metrics"].items():
            assert scalars[f"eval/{name}"][-1] == (12, pytest.approx(value, abs=1e-6))
        # the curve's train_loss: the mean training loss of the steps since the evaluation before
        values = dict(loss)
        for before, point in zip([0] + [p["step"] for p in r["curve"]], r["curve"]):
            window = [values[s] for s in range(before + 1, point["step"] + 1)]
            assert point["train_loss"] == pytest.approx(sum(window) / len(window), rel=1e-5)


def test_report_to_changes_neither_run_id_nor_recorded_config(tracked):
    tmp, suite, records = tracked
    plain = tmp / "plain.yaml"
    plain.write_text(suite.read_text().replace("    report_to: [tensorboard]\n", ""))
    from transferbench.runners.orchestrate.plan import plan_runs

    ids = {p.spec.mode: p.run_id for p in plan_runs(load_suite(plain))}
    assert ids == {mode: r["run_id"] for mode, r in records.items()}
    assert all("report_to" not in r["config"]["hyper"] for r in records.values())


def test_tracker_names_are_accelerates():
    from accelerate.utils import LoggerType

    from transferbench.hyper import ACCELERATE_TRACKERS, TRACKERS

    assert set(ACCELERATE_TRACKERS) == {t.value for t in LoggerType} - {"all"}
    assert set(TRACKERS) <= set(ACCELERATE_TRACKERS)


@pytest.mark.parametrize("value, says", [
    ("[wandb]", "report_to: Value error, tracker 'wandb' is not installed: pip install wandb"),
    ("[tensorbord]", "unknown tracker 'tensorbord' (did you mean 'tensorboard'?)"),
    ("[aim]", "accelerate supports 'aim', but transferbench does not name its runs yet"),
])
def test_a_tracker_that_cannot_run_is_one_line_before_training(value, says, tiny_bert, tmp_path, capsys,
                                                               monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[finetune]", extra=f"    report_to: {value}\n")
    capsys.readouterr()
    assert run_main("run", suite, "--results-dir", tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()  # nothing trained, nothing written


def _det_suite(tmp_path, extra=""):
    from transferbench.builtin import materialize

    suite = tmp_path / "det.yaml"
    suite.write_text(f"""
name: det
defaults: {{seeds: [0], epochs: 2, batch_size: 8, lr: default{extra}}}
benchmarks:
  - {{task: object-detection, dataset: {materialize("shapes") / "data.yaml"}, models: [yolov8n.yaml],
     modes: {{scratch: {{lr: 1.0e-2}}}}, train_samples: [16], task_args: {{imgsz: 32, ultralytics: {{mosaic: 0.0}}}}}}
""")
    return suite


def test_yolo_epochs_reach_tensorboard_and_the_log(tmp_path, caplog):
    """Ultralytics trains per epoch: one line per epoch (loss, mAP) through logging, and the same epochs in the
    tracker run (logged when the loop returns: it may train in a child process)."""
    import logging

    from transferbench.runners.orchestrate.suite import run_suite

    caplog.set_level(logging.INFO, logger="transferbench")
    (res,) = run_suite(load_suite(_det_suite(tmp_path, ", report_to: tensorboard")), tmp_path / "res")
    assert res.status == "ok", res.error
    lines = [r.getMessage() for r in caplog.records if r.name == "transferbench.runners.train.yolo_fit"]
    assert [line.split(": ", 1)[1].split(" loss ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    for line, point in zip(lines, res.curve):
        assert line.startswith("yolov8n.yaml n=16 scratch s0: ")
        assert f"loss {point['train_loss']:.4f} (box " in line and f"mAP50-95 {point['metric']:.4f}" in line
    (events,) = {p.parent for p in (tmp_path / "res" / "trackers").rglob("events.out.tfevents.*")
                 if p.parent.name.endswith(res.run_id[:8])}
    assert events.relative_to(tmp_path / "res" / "trackers").parts[-3:] == ("scratch", "n16", f"seed0-{res.run_id[:8]}")
    scalars = _scalars(events)
    steps = [p["step"] for p in res.curve]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in scalars["eval/map50_95"]] == steps
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([p["train_loss"] for p in res.curve], abs=1e-5)
    assert [v for _, v in scalars["eval/map50_95"]] == pytest.approx([p["metric"] for p in res.curve], abs=1e-6)
    assert scalars["train/learning_rate"] and all(v > 0 for _, v in scalars["train/learning_rate"])


@pytest.mark.slow
def test_yolo_epoch_lines_reach_the_terminal_from_the_child_process(tmp_path, capfd):
    """Under a multi-process launch Ultralytics trains in a child process: its per-epoch lines go to the stderr
    it shares with the parent (here captured at the file descriptor), at the parent's verbosity."""
    import logging
    import types

    from transferbench.runners.train import ultralytics
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.tasks import get_task

    logging.getLogger("transferbench").setLevel(logging.INFO)
    (plan,) = plan_runs(load_suite(_det_suite(tmp_path)))
    spec = plan.spec
    launched = types.SimpleNamespace(num_processes=2, is_main_process=True, wait_for_everyone=lambda: None,
                                     device=torch.device("cpu"), log_with=[])  # as under accelerate launch
    out = ultralytics.run(plan, get_task(spec.task)(spec.task_args), spec.model, launched,
                          work_dir=tmp_path / "work")
    err = capfd.readouterr().err
    epochs = [line for line in err.splitlines() if line.startswith("yolov8n.yaml n=16 scratch s0: epoch ")]
    assert len(epochs) == 2 and f"mAP50-95 {out.curve[-1]['metric']:.4f}" in epochs[-1]


def test_run_names_read_benchmark_model_mode_budget_seed():
    from transferbench.config import DatasetSpec, RunSpec
    from transferbench.hyper import Hyper
    from transferbench.runners.train.trackers import run_name, tensorboard_folder

    spec = RunSpec(suite="s", task="text-classification", dataset=DatasetSpec(source="hub:nyu-mll/glue", config="sst2"),
                   model="google-bert/bert-base-uncased", mode="lora", seed=2, train_fraction=0.01, hyper=Hyper())
    assert run_name(spec) == "glue-sst2/bert-base-uncased/lora/frac0.01/seed2"
    assert tensorboard_folder(spec) == f"glue-sst2/bert-base-uncased/lora/frac0.01/seed2-{spec.run_id[:8]}"
    staged = spec.model_copy(update={"model": "pretrain:glyphs vit", "dataset": DatasetSpec(source="data/my set"),
                                     "train_fraction": None, "train_samples": 64})
    assert run_name(staged) == "my-set/pretrain-glyphs-vit/lora/n64/seed2"
