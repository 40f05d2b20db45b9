"""Start-up: commands that train nothing (list, dry runs, model checks) import no torch."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from helpers import HANG_GUARD_S, result, write_store, write_suite


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
                         timeout=HANG_GUARD_S)
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
    from transferbench.runners.suites import DEFAULT_SUITE

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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.stdout.split() == ["None", "True", "False"], out.stderr[-2000:]


def test_torch_free_model_tables_are_the_libraries_own():
    """What a dry run reads from transformers', timm's and Ultralytics' source (so as not to import them: each imports
    torch) is exactly what the imported libraries hold."""
    import timm
    import yaml
    from timm.models._registry import get_deprecated_models
    from transformers.models.auto import configuration_auto, modeling_auto
    from ultralytics.nn.tasks import yaml_model_load

    from transferbench import model_files
    from transferbench.runners.train import yolo_model

    assert model_files.config_model_types() == set(configuration_auto.CONFIG_MAPPING_NAMES)
    for mapping in ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"):
        assert model_files.auto_mapping(mapping) == set(getattr(modeling_auto, mapping)), mapping
    assert model_files.auto_mapping("NO_SUCH_MAPPING_NAMES") is None  # then nothing is refused on its account
    assert model_files.timm_model_names() == set(timm.list_models()) | set(get_deprecated_models())
    for name in ("yolov8n.yaml", "yolo11s.yaml", "yolov8n6.yaml", "yolov5nu.yaml", "yolov3.yaml", "rtdetr-l.yaml"):
        found = yolo_model.model_yaml(name)
        expected = {k: v for k, v in yaml_model_load(name).items() if k not in ("scale", "yaml_file")}
        assert found and yaml.safe_load(Path(found).read_text()) == expected, name
    assert yolo_model.model_yaml("yolov8q.yaml") is None
