"""Performance against what users would run instead (issue 17): gradient clipping as a recorded option, start-up
costs out of the first run, no wasted detection checkpoints, commands that train nothing import no torch."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import cli, write_store, result, write_suite
from transferbench.config import Hyper, parse_suite
from transferbench.results import SCHEMA_VERSION, Store
from transferbench.runners import suite as runner


def _text_suite(model: str, **defaults):
    return parse_suite({"name": "clip", "defaults": {"seeds": [0], "batch_size": 8, "max_steps": 3, "lr": 1e-2,
                                                      **defaults},
                        "benchmarks": [dict(task="text-classification", dataset="builtin:topics", models=[model],
                                            task_args={"max_length": 16}, modes=["finetune"], train_samples=[24])]})


def test_max_grad_norm_at_its_default_leaves_run_ids_unchanged_and_is_part_of_the_identity_otherwise():
    assert Hyper().max_grad_norm == 1.0 and "max_grad_norm" not in Hyper().model_dump()
    (default,) = runner.expand_runs(_text_suite("m"))
    (same,) = runner.expand_runs(_text_suite("m", max_grad_norm=1.0))
    (off,) = runner.expand_runs(_text_suite("m", max_grad_norm=0))
    (none,) = runner.expand_runs(_text_suite("m", max_grad_norm=None))
    assert same.run_id == default.run_id  # stores and shipped stage stamps written before clipping existed resume
    assert len({default.run_id, off.run_id, none.run_id}) == 3
    assert off.model_dump(mode="json")["hyper"]["max_grad_norm"] == 0
    assert none.hyper.max_grad_norm is None


def test_clipping_is_recorded_and_deterministic_per_seed(tiny_bert, tmp_path):
    runs = runner.expand_runs(_text_suite(tiny_bert)) + runner.expand_runs(_text_suite(tiny_bert, max_grad_norm=0))
    records = runner.run_suite(_text_suite(tiny_bert), tmp_path / "a", log=lambda *a: None)
    again = runner.run_suite(_text_suite(tiny_bert), tmp_path / "b", log=lambda *a: None)
    off = runner.run_suite(_text_suite(tiny_bert, max_grad_norm=0), tmp_path / "c", log=lambda *a: None)
    tight = runner.run_suite(_text_suite(tiny_bert, max_grad_norm=1e-4), tmp_path / "d", log=lambda *a: None)
    (rec,), (rec2,), (rec_off,), (rec_tight,) = records, again, off, tight
    assert rec.status == rec_off.status == "ok" and rec.schema_version == SCHEMA_VERSION >= 5
    assert rec.max_grad_norm == 1.0 and rec_off.max_grad_norm is None  # what was used, in a flat field
    assert rec_off.config["hyper"]["max_grad_norm"] == 0 and "max_grad_norm" not in rec.config["hyper"]
    assert rec.loss_curve == rec2.loss_curve and rec.metrics == rec2.metrics  # deterministic per seed
    assert rec_tight.max_grad_norm == 1e-4 and rec_tight.loss_curve[-1] != rec_off.loss_curve[-1]  # it clips
    assert [r.run_id for r in (rec, rec_off)] == [r.run_id for r in runs]
    (row,) = Store(tmp_path / "a").records()
    assert row["max_grad_norm"] == 1.0


def test_detection_refuses_a_max_grad_norm_it_cannot_apply():
    from transferbench.errors import UserError

    suite = parse_suite({"name": "d", "defaults": {"seeds": [0], "max_grad_norm": 0.5}, "benchmarks": [
        dict(task="object-detection", dataset="builtin:shapes", models=["yolov8n.yaml"], modes=["scratch"],
             train_samples=[8])]})
    with pytest.raises(UserError, match="always clips at 10"):
        runner.preflight(runner.expand_runs(suite))


NO_TORCH = textwrap.dedent("""
    import builtins, sys, traceback
    first = []  # the file whose import statement brought torch in first
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        if name.split(".")[0] == "torch" and "torch" not in sys.modules and not first:
            frames = [f.filename for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<")]
            first.append(frames[-1])
        return real_import(name, *args, **kwargs)

    builtins.__import__ = spy
    from transferbench.runners.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as stop:  # --help
        code = stop.code
    heavy = sorted(m for m in ("torch", "scipy", "matplotlib") if m in sys.modules)
    print("IMPORTED:" + ",".join(heavy), file=sys.stderr)
    print("TORCH_FROM:" + (first[0] if first else ""), file=sys.stderr)
    sys.exit(code)
""")


def _imported(*args) -> tuple[list[str], str]:
    """(the heavy modules imported by the command, the file that imported torch first or "")."""
    out = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    heavy = [x for x in lines if x.startswith("IMPORTED:")][-1][len("IMPORTED:"):]
    source = [x for x in lines if x.startswith("TORCH_FROM:")][-1][len("TORCH_FROM:"):]
    return [m for m in heavy.split(",") if m], source


def test_commands_that_train_nothing_import_no_torch(tmp_path):
    assert _imported("list") == ([], "")
    assert _imported("--help") == ([], "")
    store = write_store(tmp_path / "res", [json.loads(result("r1", metric=0.5, status="ok").to_json())])
    assert "torch" not in _imported("report", store)[0]  # scipy/matplotlib only where fits and plots are drawn
    suite = write_suite(tmp_path / "s.yaml", "all-minilm-l6-v2", seeds="[0, 1]", budget="[16, 32]")
    # A dry run checks what `run` checks (issue 13): the model's config must load, and transformers 5 imports
    # torch with its configuration module. transferbench itself imports none: torch comes from the library.
    heavy, source = _imported("run", suite, "--dry-run", "--results-dir", tmp_path / "dry")
    repo = str(Path(__file__).resolve().parents[1])
    assert "site-packages" in source or not source, source  # a library's module, never one of transferbench's
    assert not source or not Path(source).resolve().is_relative_to(Path(repo) / "transferbench"), source
    assert not (tmp_path / "dry").exists()


@pytest.mark.slow
def test_a_dry_run_of_the_default_suite_imports_no_torch_of_its_own(tmp_path):
    """The quickstart's dry run checks its shipped stage checkpoints (safetensors headers, read without torch), its
    models' configs and its data. transferbench brings no torch in; what does is transformers 5, whose
    configuration module imports torch whenever it is installed (AutoConfig, AutoTokenizer), and timm."""
    from transferbench.runners.cli import DEFAULT_SUITE

    heavy, source = _imported("run", DEFAULT_SUITE, "--dry-run", "--results-dir", tmp_path / "dry")
    assert "/site-packages/transformers/" in source or "/site-packages/timm/" in source, source
    assert not (tmp_path / "dry").exists()


def test_checkpoint_check_reads_safetensors_headers_without_torch(tmp_path):
    """checkpoints.problem is what a dry run runs on every shipped stage: in a fresh interpreter it must not
    import torch, and it still finds a truncated file."""
    from safetensors.numpy import save_file
    import numpy as np

    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_file({"w": np.zeros((3, 4), np.float32)}, str(good))
    bad.write_bytes(good.read_bytes()[:-5])
    code = ("import sys; from transferbench import checkpoints; "
            f"print(checkpoints.problem({str(good)!r}), bool(checkpoints.problem({str(bad)!r})), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["None", "True", "False"], out.stderr[-2000:]


def test_warm_up_keeps_start_up_costs_out_of_the_first_run(tiny_bert, tmp_path):
    """In a fresh process (as `transferbench run`), the first run (seed 0) pays no import of the model's module or
    of the metric modules: its setup and eval seconds are within noise of seeds 1-2; the suite's timing has them."""
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[scratch]", seeds="[0, 1, 2]", budget="[32]")
    out = cli("run", suite, "--results-dir", tmp_path / "res")
    assert out.returncode == 0, out.stderr[-3000:]
    recs = sorted(Store(tmp_path / "res").records(), key=lambda r: r["seed"])
    first, others = recs[0], recs[1:]
    assert [r["seed"] for r in recs] == [0, 1, 2] and all(r["status"] == "ok" for r in recs)
    for key in ("setup_seconds", "eval_seconds"):
        assert first[key] <= 2 * max(r[key] for r in others) + 0.5, (key, [r[key] for r in recs])
    (row,) = [json.loads(x) for x in (tmp_path / "res" / "suite_timing.jsonl").read_text().splitlines()]
    assert row["warmup_seconds"] > 0


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

    from transferbench.runners import yolo_fit
    from transferbench.tasks import yolo_env

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
