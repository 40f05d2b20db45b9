"""object-detection through Ultralytics YOLO: modes train what they say, no network, bad data is caught (label
lines, options it cannot apply), no wasted checkpoints, and a 2-process `accelerate launch` trains one copy and
writes one row per run."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import HANG_GUARD_S, KEEP, accelerate_launch, cli
from transferbench.builtin import materialize
from transferbench.config import parse_suite
from transferbench.results import Store
from transferbench.runners.orchestrate import suite as runner
from transferbench.runners.orchestrate.preflight import preflight


# --- pieces the table cannot reach through the CLI ---------------------------------------------------------
@pytest.mark.parametrize("line", ["nan 0.5 0.5 0.1 0.1", "inf 0.5 0.5 0.1 0.1", "-inf 0.5 0.5 0.1 0.1",
                                  "0 nan 0.5 0.1 0.1", "1e999 0.5 0.5 0.1 0.1", "0 0.5 0.5 inf 0.1"])
def test_yolo_label_lines_with_non_finite_numbers_are_named(tmp_path, line):
    from transferbench.tasks.object_detection import _label_problem

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(line + "\n")
    problem = _label_problem(str(tmp_path / "images" / "a.png"), nc=4)
    assert problem and "a.txt:1" in problem


def test_detection_refuses_a_max_grad_norm_it_cannot_apply():
    from transferbench.errors import UserError

    suite = parse_suite({"name": "d", "defaults": {"seeds": [0], "max_grad_norm": 0.5}, "benchmarks": [
        dict(task="object-detection", dataset="builtin:shapes", models=["yolov8n.yaml"], modes=["scratch"],
             train_samples=[8])]})
    with pytest.raises(UserError, match="always clips at 10"):
        preflight(runner.plan_runs(suite))


@pytest.fixture(scope="module")
def tiny_yolo_data(tmp_path_factory) -> Path:
    from transferbench.builtin import materialize

    src = materialize("shapes")
    root = tmp_path_factory.mktemp("yolo-data")
    (root / "train.txt").write_text("\n".join(map(str, sorted((src / "images" / "train").glob("*.png"))[:8])) + "\n")
    (root / "val.txt").write_text("\n".join(map(str, sorted((src / "images" / "val").glob("*.png"))[:4])) + "\n")
    (root / "data.yaml").write_text("train: train.txt\nval: val.txt\nnames: {0: circle, 1: square, 2: triangle, "
                                    "3: cross}\n")
    return root / "data.yaml"


def test_detection_writes_no_checkpoint_and_stays_under_a_relative_results_dir(tiny_yolo_data, tmp_path,
                                                                                monkeypatch):
    """Also: the source checkpoint is built outside the run's random stream, so a seed's fresh layers are the same
    in scratch and finetune (the class-prediction convs, which a 6-class source cannot give a 4-class target)."""
    import torch

    from transferbench.runners.train import yolo_fit
    from transferbench.runners.train import yolo_env

    yolo_env.load()
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    torch.manual_seed(1234)
    source = tmp_path / "stage"
    yolo_fit.save_stage(DetectionModel(yaml_model_load("yolov8n.yaml"), nc=6, verbose=False),
                        {i: f"c{i}" for i in range(6)}, source)
    seen, make = {}, yolo_fit._trainer_class

    def spy():
        class Spy(make()):
            def get_model(self, *a, **k):
                model = super().get_model(*a, **k)
                seen[self.job["pretrained"]] = {n: v.clone() for n, v in model.state_dict().items()}
                return model
        return Spy

    monkeypatch.setattr(yolo_fit, "_trainer_class", spy)
    monkeypatch.chdir(tmp_path)
    bench = dict(task="object-detection", dataset=str(tiny_yolo_data), modes=["scratch"], train_samples=[8],
                 task_args={"imgsz": 32, "ultralytics": {"mosaic": 0.0}})
    suite = parse_suite({"name": "det", "defaults": {"seeds": [0], "epochs": 1, "batch_size": 4}, "benchmarks": [
        dict(bench, models=["yolov8n.yaml"]), dict(bench, models=[str(source)], modes=["finetune"])]})
    results = runner.run_suite(suite, Path("res"), log=lambda *a: None)  # relative, as the default results/<suite>
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
    for res in results:
        assert res.max_grad_norm == 10.0  # Ultralytics' own clipping, recorded
        run_dir = tmp_path / "res" / "work" / res.run_id / "ultralytics"
        assert (run_dir / "results.csv").exists()  # Ultralytics' save dir is the run's work dir, not its runs dir
    assert not list(tmp_path.rglob("*.pt"))  # no last.pt / best.pt: nothing reads them
    fresh = [n for n in seen[True] if ".cv3." in n and n.endswith(".2.weight")]  # nc-sized: not transferred
    assert fresh and all(torch.equal(seen[True][n], seen[False][n]) for n in fresh)
    assert not torch.equal(seen[True]["model.0.conv.weight"], seen[False]["model.0.conv.weight"])  # loaded


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A user-style data.yaml over 16 train / 12 val pictures of builtin:shapes (image lists, names dict)."""
    src = materialize("shapes")
    root = tmp_path_factory.mktemp("yolo-data")
    train = sorted((src / "images" / "train").glob("*.png"))[:16]
    val = sorted((src / "images" / "val").glob("*.png"))[:12]
    (root / "train.txt").write_text("\n".join(map(str, train)) + "\n")
    (root / "val.txt").write_text("\n".join(map(str, val)) + "\n")
    (root / "data.yaml").write_text("train: train.txt\nval: val.txt\nnames: {0: circle, 1: square, 2: triangle, "
                                    "3: cross}\n")
    return root / "data.yaml"


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory) -> Path:
    """A transferbench detection checkpoint (as a pretrain stage writes it) of a 6-class yolov8n."""
    from transferbench.runners.train import yolo_env
    yolo_env.load()
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    from transferbench.runners.train.yolo_fit import save_stage

    torch.manual_seed(1234)  # not the runs' seed, whose random init would be this very model
    model = DetectionModel(yaml_model_load("yolov8n.yaml"), nc=6, verbose=False)
    folder = tmp_path_factory.mktemp("stage") / "ckpt"
    save_stage(model, {i: f"c{i}" for i in range(6)}, folder)
    return folder


def det_suite(path: Path, data, model, modes="[scratch]", extra="") -> Path:
    path.write_text(textwrap.dedent(f"""
        name: det
        defaults: {{seeds: [0], epochs: 1, batch_size: 8}}
        benchmarks:
          - task: object-detection
            dataset: {data}
            models: [{model}]
            modes: {modes}
            train_samples: [16]
            task_args: {{imgsz: 32, ultralytics: {{mosaic: 0.0}}}}
        """) + extra)
    return path


def test_modes_train_what_they_say(tmp_path, tiny_data, source_checkpoint, monkeypatch):
    """LoRA: only adapters, neck and Detect change (base weights and frozen BatchNorm statistics do not);
    linear-probe: the backbone is frozen; scratch: the same architecture, not the checkpoint's weights."""
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.suite import run_suite
    from transferbench.runners.train import yolo_fit

    seen = {}
    make = yolo_fit._trainer_class

    def spy():
        cls = make()

        class Spy(cls):
            def get_model(self, *a, **k):
                model = super().get_model(*a, **k)
                seen[self.job["mode"]] = (self, {n: v.clone() for n, v in model.state_dict().items()})
                return model
        return Spy

    monkeypatch.setattr(yolo_fit, "_trainer_class", spy)
    suite = det_suite(tmp_path / "s.yaml", tiny_data, source_checkpoint,
                      "{scratch: {lr: 1.0e-2}, lora: {lr: 1.0e-2}, linear-probe: {lr: 1.0e-2}}")
    results = run_suite(load_suite(suite), tmp_path / "res")
    assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]

    from safetensors.torch import load_file
    source = load_file(source_checkpoint / "model.safetensors")
    backbone = tuple(f"model.{i}." for i in range(10))  # yolov8n: layers 0-9 are the backbone

    trainer, before = seen["lora"]
    after = trainer.model.state_dict()
    lora = [n for n in after if "lora_" in n]
    assert lora and all(n.startswith(backbone) for n in lora)
    assert any(not torch.equal(after[n], before[n]) for n in lora)
    base = [n for n in after if n.startswith(backbone) and "lora_" not in n]
    assert base and all(torch.equal(after[n], before[n]) for n in base), "a frozen base tensor changed"
    head = [n for n in after if not n.startswith(backbone) and n.endswith("weight") and ".dfl" not in n]
    assert any(not torch.equal(after[n], before[n]) for n in head)
    # the pretrained backbone really was loaded (fp16 round trip of the stage checkpoint)
    w = "model.0.conv.base_layer.weight"
    assert torch.allclose(before[w], source["model.0.conv.weight"].float())

    trainer, before = seen["linear-probe"]
    after = trainer.model.state_dict()
    assert not any("lora_" in n for n in after)
    assert all(torch.equal(after[n], before[n]) for n in after if n.startswith(backbone))
    assert any(not torch.equal(after[n], before[n]) for n in after if not n.startswith(backbone) and ".dfl" not in n)

    _, before = seen["scratch"]
    assert before["model.0.conv.weight"].shape == source["model.0.conv.weight"].shape
    assert not torch.allclose(before["model.0.conv.weight"], source["model.0.conv.weight"].float(), atol=1e-2)

    by_mode = {r.mode: r for r in results}
    assert by_mode["scratch"].params_trainable == by_mode["scratch"].params_total - 16  # all but the fixed DFL
    assert by_mode["linear-probe"].params_trainable < by_mode["lora"].params_trainable < by_mode["scratch"].params_total
    for r in results:  # the record is filled like any other task's
        assert r.metric_name == "map50_95" and 0 <= r.metric <= 1 and set(r.metrics) >= {"map50", "precision", "recall"}
        assert r.train_samples == 16 and r.eval_samples == 12 and r.curve[-1]["samples_seen"] == 16
        assert r.train_seconds > 0 and r.eval_seconds > 0
    # Ultralytics wrote under the results dir, nothing in the current directory
    assert list((tmp_path / "res" / "work").glob("*/ultralytics/results.csv"))


NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*a, **k):
    attempts.append(a)
    open(sys.argv[1], "a").write(repr(a)[:200] + "\\n")
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse
from transferbench.runners.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_no_network_attempt_during_a_detection_run(tmp_path, tiny_data):
    suite = det_suite(tmp_path / "s.yaml", tiny_data, "yolov8n.yaml")
    log = tmp_path / "attempts.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}  # the defaults must be safe alone
    out = subprocess.run([sys.executable, "-c", NO_NETWORK, str(log), "run", str(suite), "--results-dir",
                          str(tmp_path / "res")], capture_output=True, text=True, timeout=HANG_GUARD_S, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not log.exists(), log.read_text()
    (rec,) = Store(tmp_path / "res").records()
    assert rec["status"] == "ok" and rec["metric_name"] == "map50_95"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res", "s.yaml"]  # nothing written to the cwd


def _yolo_folder(root: Path, labels: dict[str, str], val: int = 2) -> Path:
    """A small YOLO dataset: train images with the given label text, `val` valid val images."""
    from PIL import Image

    for split, items in (("train", labels), ("val", {f"v{i}": "0 0.5 0.5 0.2 0.2" for i in range(val)})):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name, text in items.items():
            Image.new("RGB", (32, 32), (200, 50, 50)).save(root / "images" / split / f"{name}.png")
            (root / "labels" / split / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    return root / "data.yaml"


GOOD = "0 0.5 0.5 0.3 0.3\n"


def _yaml(root: Path, text: str) -> Path:
    (root / "data.yaml").write_text(text)
    return root / "data.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("case, make, message", [
    ("missing folder", lambda r: _yaml(r, "train: nowhere/train\nval: nowhere/val\nnames: [a]\n"), "does not exist"),
    ("empty val split", lambda r: _yolo_folder(r, {"t0": GOOD}, val=0), "'val' split has no usable images"),
    ("class id out of range", lambda r: _yolo_folder(r, {"t0": "7 0.5 0.5 0.2 0.2"}), "outside 0..1"),
    ("malformed line", lambda r: _yolo_folder(r, {"t0": "0 0.5 0.5"}), "expected 'class cx cy w h'"),
    ("no names", lambda r: _yaml(r, "train: a\nval: b\n"), "needs 'names'"),
])
def test_bad_detection_data_is_one_line_exit_2(tmp_path, case, make, message):
    data = make(tmp_path)
    out = cli("run", det_suite(tmp_path / "s.yaml", data, "yolov8n.yaml"), "--results-dir", tmp_path / "res")
    assert out.returncode == 2, (case, out.stdout[-500:], out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr, out.stderr


def test_bad_label_files_among_good_ones_are_named_and_left_out(tmp_path):
    from transferbench.tasks.object_detection import load_yolo_data

    data = _yolo_folder(tmp_path, {"t0": GOOD, "t1": "3 0.5 0.5 0.2 0.2", "t2": GOOD, "t3": "0 1.5 0.5 0.2 0.2"})
    with pytest.warns(UserWarning, match=r"left out 2 image\(s\).*t1\.txt:1: class id 3.*t3\.txt:1: coordinates"):
        loaded = load_yolo_data(str(data), None)
    assert [Path(p).stem for p in loaded.train] == ["t0", "t2"] and len(loaded.val) == 2


@pytest.mark.slow
def test_two_process_accelerate_launch_trains_one_copy(tmp_path, tiny_data):
    suite = det_suite(tmp_path / "s.yaml", tiny_data, "yolov8n.yaml", "[scratch]", extra="")
    out = accelerate_launch("run", suite, "--results-dir", tmp_path / "res")
    assert out.returncode == 0, out.stderr[-3000:]
    (rec,) = Store(tmp_path / "res").records()  # one row, written by the main process
    assert rec["status"] == "ok" and rec["num_processes"] == 2 and rec["train_samples"] == 16
    runs = list((tmp_path / "res" / "work").glob("*/ultralytics/results.csv"))
    assert len(runs) == 1  # one Ultralytics training, not one per process


@pytest.mark.slow
@pytest.mark.parametrize("model, modes, task_args, extra, message", [
    ("yolov8n.yaml", "[scratch]", "{}", "    max_steps: 10\n", "max_steps is not supported"),
    ("yolov8n.yaml", "[scratch]", "{}", "    epochs: 1.5\n", "epochs must be a whole number"),
    ("yolov8n.yaml", "[scratch]", "{ultralytics: {epochs: 3}}", "", "may not set epochs"),
    ("yolov8n.yaml", "[finetune]", "{}", "", "needs pretrained weights"),
    ("yolov8n.pt", "[finetune]", "{}", "", "cannot be downloaded here"),
])
def test_detection_runs_it_cannot_train_are_refused_before_training(tmp_path, tiny_data, model, modes, task_args,
                                                                    extra, message):
    suite = det_suite(tmp_path / "s.yaml", tiny_data, model, modes)
    text = suite.read_text().replace("task_args: {imgsz: 32, ultralytics: {mosaic: 0.0}}",
                                     f"task_args: {task_args}") + extra
    suite.write_text(text)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(KEEP + "\n")
    out = cli("run", suite, "--results-dir", tmp_path / "res", env={"YOLO_OFFLINE": "1"})
    assert out.returncode == 2, (out.stdout[-500:], out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert (tmp_path / "res" / "runs.jsonl").read_text() == KEEP + "\n"  # the store is untouched
