"""Performance against what users would run instead (issue 17): gradient clipping as a recorded option, start-up
costs out of the first run, no wasted detection checkpoints, commands that train nothing import no torch."""
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from helpers import cli, write_store, result, write_suite
from transferbench.config import Hyper, parse_suite
from transferbench.results import SCHEMA_VERSION, Store
from transferbench.runners.orchestrate import suite as runner


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


def _imported(*args, code: int = 0, errors: Optional[list] = None) -> tuple[list[str], str]:
    """(the heavy modules imported by the command, the file that imported torch first or ""); its one-line errors
    are appended to `errors`."""
    out = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == code, out.stderr[-3000:]
    lines = out.stderr.splitlines()
    if errors is not None:
        errors.extend(x for x in lines if x.startswith("transferbench: error: "))
    heavy = [x for x in lines if x.startswith("IMPORTED:")][-1][len("IMPORTED:"):]
    source = [x for x in lines if x.startswith("TORCH_FROM:")][-1][len("TORCH_FROM:"):]
    return [m for m in heavy.split(",") if m], source


def test_commands_that_train_nothing_import_no_torch(tmp_path, tiny_bert):
    assert _imported("list") == ([], "")
    assert _imported("--help") == ([], "")
    store = write_store(tmp_path / "res", [json.loads(result("r1", metric=0.5, status="ok").to_json())])
    assert "torch" not in _imported("report", store)[0]  # scipy/matplotlib only where fits and plots are drawn
    # A dry run checks what `run` checks (the model's config, its tokenizer, the data, the budgets), reading the
    # model's files: transformers 5's configuration module would import torch, so AutoConfig is never called
    suite = write_suite(tmp_path / "s.yaml", f"{tiny_bert}, all-minilm-l6-v2", seeds="[0, 1]", budget="[16, 32]")
    heavy, source = _imported("run", suite, "--dry-run", "--results-dir", tmp_path / "dry")
    assert "torch" not in heavy and not source, source
    assert not (tmp_path / "dry").exists()


DRY_SUITE = """
name: dry
defaults: {{seeds: [0, 1], epochs: 1, batch_size: 8}}
pretrain:
  vit: {{task: image-classification, dataset: builtin:digits, model: {{model_type: vit, image_size: 16, patch_size: 8,
        hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16}}}}
benchmarks:
  - {{task: text-classification, dataset: builtin:topics, models: [{bert}], task_args: {{max_length: 16}},
     modes: {{scratch: {{lr: 0.001}}, lora: {{lr: 0.001}}, partial: {{partial_blocks: 1}}}}, train_samples: [16]}}
  - {{task: image-classification, dataset: builtin:digits, models: [{image}, {resnet}, pretrain:vit],
     task_args: {{image_size: 16}}, modes: [scratch, finetune, lora, linear-probe], train_samples: [16]}}
  - {{task: object-detection, dataset: builtin:shapes, models: [{yolo}], task_args: {{imgsz: 64}}, modes: [scratch],
     train_samples: [8]}}
"""


@pytest.mark.slow
def test_a_dry_run_of_text_image_and_detection_suites_imports_no_torch_and_still_refuses(tmp_path, tiny_bert):
    """Every kind of model a dry run checks, from its files: a save_pretrained BERT (config, tokenizer) with a mode
    whose fit needs a built model (partial: left to the real run's preflight), a timm architecture, a transformers
    ResNet folder, a pretrain stage from an architecture config (ViT; the stage itself is checked too: it has not
    trained), a YOLO model YAML. A bad model is still one line and exit 2, without torch."""
    from transformers import ResNetConfig, ResNetForImageClassification

    ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8)).save_pretrained(
        tmp_path / "resnet")
    good = dict(bert=tiny_bert, image="timm:resnet10t", resnet=tmp_path / "resnet", yolo="yolov8n.yaml")
    (tmp_path / "s.yaml").write_text(DRY_SUITE.format(**good))
    heavy, source = _imported("run", tmp_path / "s.yaml", "--dry-run", "--results-dir", tmp_path / "dry")
    assert "torch" not in heavy and not source, source  # (scipy: scikit-learn's digits are built into the cache)
    bad = {"unknown timm model 'resnet10q'": dict(image="timm:resnet10q"),
           f"model '{tiny_bert}' (model_type 'bert') is not an image classifier": dict(resnet=tiny_bert),
           "model 'yolov8q.yaml': no such YOLO model YAML": dict(yolo="yolov8q.yaml"),
           "(model_type 'resnet') is not a text (sequence) classifier": dict(bert=tmp_path / "resnet")}
    for message, change in bad.items():
        (tmp_path / "s.yaml").write_text(DRY_SUITE.format(**{**good, **change}))
        errors = []
        heavy, source = _imported("run", tmp_path / "s.yaml", "--dry-run", "--results-dir", tmp_path / "dry", code=2,
                                  errors=errors)
        assert "torch" not in heavy and not source, (message, source)
        assert len(errors) == 1 and message in errors[0], (message, errors)
    assert not (tmp_path / "dry").exists()


@pytest.mark.slow
def test_a_dry_run_of_the_default_suite_imports_no_torch(tmp_path):
    """The quickstart's dry run checks its shipped stage checkpoints (safetensors headers), its models (MiniLM's
    config and tokenizer files, timm's architecture name and the weights file, the stages' architectures, the
    YOLO model YAML) and its data, and imports no torch: no library's loader is called."""
    from transferbench.runners.cli import DEFAULT_SUITE

    heavy, source = _imported("run", DEFAULT_SUITE, "--dry-run", "--results-dir", tmp_path / "dry")
    assert "torch" not in heavy and not source, source
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

    from transferbench.runners.train import yolo_fit
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


def test_torch_free_model_tables_are_the_libraries_own():
    """What a dry run reads from transformers', timm's and Ultralytics' source (so as not to import them: each imports
    torch) is exactly what the imported libraries hold."""
    import timm
    import yaml
    from timm.models._registry import get_deprecated_models
    from transformers.models.auto import configuration_auto, modeling_auto
    from ultralytics.nn.tasks import yaml_model_load

    from transferbench import model_files
    from transferbench.tasks import object_detection

    assert model_files.config_model_types() == set(configuration_auto.CONFIG_MAPPING_NAMES)
    for mapping in ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"):
        assert model_files.auto_mapping(mapping) == set(getattr(modeling_auto, mapping)), mapping
    assert model_files.auto_mapping("NO_SUCH_MAPPING_NAMES") is None  # then nothing is refused on its account
    assert model_files.timm_model_names() == set(timm.list_models()) | set(get_deprecated_models())
    for name in ("yolov8n.yaml", "yolo11s.yaml", "yolov8n6.yaml", "yolov5nu.yaml", "yolov3.yaml", "rtdetr-l.yaml"):
        found = object_detection._model_yaml(name)
        expected = {k: v for k, v in yaml_model_load(name).items() if k not in ("scale", "yaml_file")}
        assert found and yaml.safe_load(Path(found).read_text()) == expected, name
    assert object_detection._model_yaml("yolov8q.yaml") is None


def test_model_files_refuse_what_the_loaders_refuse_in_one_line(tmp_path, tiny_bert):
    """The config and tokenizer checks give the run's one-line errors (and a few the loaders gave as tracebacks)."""
    import shutil

    from transferbench import model_files, models
    from transferbench.errors import UserError

    def folder(name, config=None, copy=False):
        path = tmp_path / name
        shutil.copytree(tiny_bert, path) if copy else path.mkdir()
        if config is not None:
            (path / "config.json").write_text(json.dumps(config))
        return str(path)

    seq = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    assert model_files.check_auto_class(tiny_bert, seq, "a text classifier") == "bert"
    assert model_files.check_auto_class("all-minilm-l6-v2", seq, "a text classifier") == "bert"
    model_files.check_tokenizer(tiny_bert)
    cases = {
        folder("empty"): "it has no config.json",
        folder("untyped", {"hidden_size": 8}): "its config.json has no model_type",
        folder("unknown", {"model_type": "no-such-arch"}): "does not know model_type 'no-such-arch'",
        folder("remote", {"model_type": "mine", "auto_map": {"AutoConfig": "c.C"}}): "needs its own code",
        folder("vision", {"model_type": "vit"}): "(model_type 'vit') is not a text classifier",
        "nobody/nothing-here": "cannot be downloaded from the Hub here",
    }
    for ref, message in cases.items():
        with pytest.raises(UserError, match=re.escape(message)):
            model_files.check_auto_class(ref, seq, "a text classifier")
    try:
        models.trust_remote_code([str(tmp_path / "remote")])  # trusted: past the code check, to the mapping's
        with pytest.raises(UserError, match=re.escape("(model_type 'mine') is not a text classifier")):
            model_files.check_auto_class(str(tmp_path / "remote"), seq, "a text classifier")
    finally:
        models.trust_remote_code([])
    no_tokenizer = folder("no-tokenizer", {"model_type": "bert"})
    with pytest.raises(UserError, match="cannot load a tokenizer from .*none of tokenizer.json"):
        model_files.check_tokenizer(no_tokenizer)
    broken = folder("broken-tokenizer", copy=True)
    (Path(broken) / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}')
    with pytest.raises(UserError, match="cannot load .*tokenizer.json"):
        model_files.check_tokenizer(broken)
    with pytest.raises(UserError, match="an architecture config has no tokenizer"):
        model_files.check_tokenizer('config:{"model_type": "bert"}')
    with pytest.raises(UserError, match="Unrecognized model identifier: vitt"):
        model_files.config('config:{"model_type": "vitt"}')


def test_model_files_read_a_hub_model_from_the_local_cache(tmp_path, tiny_bert, monkeypatch):
    """A Hub id resolves through huggingface_hub's cache as from_pretrained would offline: found when cached,
    the run's one-line 'cannot be downloaded' error when not."""
    import shutil

    from huggingface_hub import constants

    from transferbench import model_files
    from transferbench.errors import UserError

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(Path(tiny_bert) / name, snapshot / name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seq = "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"
    assert model_files.check_auto_class("org/tiny", seq, "a text classifier") == "bert"
    model_files.check_tokenizer("org/tiny")  # tokenizer.json cached; the other tokenizer files need not be
    with pytest.raises(UserError, match="'org/other' is neither an alias .* cannot be downloaded from the Hub here"):
        model_files.check_auto_class("org/other", seq, "a text classifier")
    (snapshot / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="cannot be downloaded from the Hub here"):
        model_files.check_tokenizer("org/tiny")
