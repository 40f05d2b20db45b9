"""image-classification: LoRA defaults per architecture, scratch init, pretrain stages, bad image data (corrupt
images, decompression bombs)."""
import json

import pytest
import torch
from PIL import Image

from helpers import cli, write_xor_task
from transferbench.config import Hyper
from transferbench.modes import get_mode
from transferbench.results import Store
from transferbench.tasks import get_task


def test_a_decompression_bomb_is_skipped_and_named_like_a_corrupt_image(tmp_path):
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from transferbench.tasks._image_data import decode_resize

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a 100 000 x 100 000 header over a few bytes of data
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad: list = []
    out = decode_resize({"image": [{"path": str(bomb), "bytes": None}, {"path": str(good), "bytes": None}]},
                        "image", 4, bad)
    assert out["_ok"] == [False, True] and bad == [str(bomb)]


LABELS = [str(i) for i in range(10)]


VIT = {"model_type": "vit", "image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
       "num_attention_heads": 2, "intermediate_size": 64}


RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 16], "depths": [1, 1, 1, 1]}


def _ref(config: dict) -> str:
    return "config:" + json.dumps(config, sort_keys=True)


def _checkpoint(config: dict, tmp_path) -> str:
    """A saved (random) checkpoint of the architecture: stands in for a Hub model."""
    from transformers import AutoConfig, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_config(AutoConfig.for_model(**config, num_labels=10))
    model.save_pretrained(tmp_path)
    return str(tmp_path)


def _prepared(ref, mode_name, hyper=Hyper()):
    task = get_task("image-classification")({})
    mode = get_mode(mode_name)
    torch.manual_seed(0)
    model = task.build_model(ref, LABELS, pretrained=mode.pretrained)
    targets = task.lora_targets_for(model, hyper.lora_targets) if mode_name == "lora" else []
    return mode.prepare(model, task.head_names(model), targets, hyper)


@pytest.mark.parametrize("arch", ["vit", "resnet", "timm-efficientnet", "timm-resnet"])
def test_default_lora_targets_adapt_the_base_frozen_and_train_the_head(arch, tmp_path):
    ref = {"vit": lambda: _checkpoint(VIT, tmp_path), "resnet": lambda: _checkpoint(RESNET, tmp_path),
           "timm-efficientnet": lambda: "timm:efficientnet_lite0", "timm-resnet": lambda: "timm:resnet10t"}[arch]()
    if ref.startswith("timm:"):  # no download: the architecture with random weights, saved as a local file
        import timm
        from safetensors.torch import save_file

        file = tmp_path / "w.safetensors"
        random = timm.create_model(ref[5:], pretrained=False)
        for m in random.modules():  # timm zero-inits each block's last BN gamma: no gradient would reach the convs
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.ones_(m.weight)
        save_file(random.state_dict(), file)
        ref = f"{ref}@{file}"
    model = _prepared(ref, "lora")
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    adapters = {n for n in names if "lora_" in n}
    assert adapters and all("lora_" in n or "modules_to_save" in n for n in names)  # base frozen
    assert any("modules_to_save" in n for n in names)  # the head trains in full
    x = torch.randn(4, 3, 32, 32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model(pixel_values=x, labels=torch.tensor([0, 1, 2, 3])).loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed <= names and any("lora_A" in n for n in changed) and any("modules_to_save" in n for n in changed)


def test_scratch_is_random_with_the_identical_config(tmp_path):
    ref = _checkpoint(VIT, tmp_path)
    scratch, finetune = _prepared(ref, "scratch"), _prepared(ref, "finetune")
    assert scratch.config.to_diff_dict() == finetune.config.to_diff_dict()
    from transformers import AutoModelForImageClassification

    ckpt = AutoModelForImageClassification.from_pretrained(ref).state_dict()
    key = "vit.layers.0.attention.q_proj.weight"
    assert torch.equal(finetune.state_dict()[key], ckpt[key])
    assert not torch.allclose(scratch.state_dict()[key], ckpt[key])


def test_linear_probe_trains_only_the_timm_head():
    model = _prepared("timm:resnet10t", "scratch")  # architecture only; the probe logic is the same
    get_mode("linear-probe").prepare(model, get_task("image-classification")({}).head_names(model), [], Hyper())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"model.fc.weight", "model.fc.bias"}


STAGE_SUITE = f"""
name: stages
defaults: {{seeds: [0], epochs: 1, batch_size: 32, lr: default}}
pretrain:
  glyphs-vit:
    task: image-classification
    dataset: builtin:glyphs
    model: {json.dumps(VIT)}
    train_samples: 256
benchmarks:
  - task: image-classification
    dataset: builtin:digits
    models: [pretrain:glyphs-vit]
    modes: [scratch, finetune]
    train_samples: [64]
"""


@pytest.mark.slow
def test_pretrain_stage_is_trained_once_and_feeds_the_runs(tmp_path):
    (tmp_path / "s.yaml").write_text(STAGE_SUITE)
    first = cli("run", tmp_path / "s.yaml", "--results-dir", tmp_path / "a", "--price-per-device-hour", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("pretrain stage glyphs-vit: training") == 1
    records = Store(tmp_path / "a").records()
    assert [r["status"] for r in records] == ["ok", "ok"] and records[0]["model"] == "pretrain:glyphs-vit"
    stage = records[1]["config"]["stage"]
    assert stage["stage_name"] == "glyphs-vit" and stage["dataset"]["source"] == "builtin:glyphs"
    again = cli("run", tmp_path / "s.yaml", "--results-dir", tmp_path / "b", "--price-per-device-hour", "0")
    assert again.returncode == 0 and "pretrain stage glyphs-vit: training" not in again.stdout  # reused later
    changed = cli("run", "--dry-run", tmp_path / "s.yaml")
    assert changed.returncode == 0
    (tmp_path / "s.yaml").write_text(STAGE_SUITE.replace("train_samples: 256", "train_samples: 128"))
    ids_b = {r["run_id"] for r in Store(tmp_path / "b").records()}
    new_ids = {line.split()[0] for line in cli("run", "--dry-run", tmp_path / "s.yaml").stdout.splitlines()[:-1]}
    assert ids_b.isdisjoint(new_ids)  # a changed stage changes the identity of every run built on it


def _imagefolder(root, classes, n=6):
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
        (root / "test" / c).mkdir(parents=True)
        for i in range(n):
            for split in ("train", "test"):
                Image.new("RGB", (16, 16), (40 * i, 100 if c == classes[0] else 200, 0)).save(
                    root / split / c / f"{i}.png")
    return root


def _suite(tmp_path, dataset, model="timm:resnet10t", extra=""):
    (tmp_path / "s.yaml").write_text(f"""
name: img
defaults: {{seeds: [0], epochs: 1, batch_size: 4, lr: default}}
benchmarks:
  - task: image-classification
    dataset: {dataset}
    models: [{model}]
    modes: [scratch]
    task_args: {{image_size: 32}}
{extra}""")
    return tmp_path / "s.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["one class", "missing column", "not an image classifier"])
def test_bad_image_input_is_one_line_and_exit_2(case, tmp_path):
    if case == "one class":
        suite = _suite(tmp_path, _imagefolder(tmp_path / "data", ["cat"]))
        expected = "needs one sub-folder per class, at least 2"
    elif case == "missing column":
        suite = _suite(tmp_path, f"{{source: {_imagefolder(tmp_path / 'data', ['a', 'b'])}, columns: {{image: img}}}}")
        expected = "has no column 'img'"
    else:
        suite = _suite(tmp_path, "builtin:digits", model="all-minilm-l6-v2")
        expected = "is not an image classifier"
    proc = cli("run", suite, "--results-dir", tmp_path / "res")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr


@pytest.mark.slow
def test_a_corrupt_image_is_named_and_skipped(tmp_path):
    root = _imagefolder(tmp_path / "data", ["a", "b"])
    (root / "train" / "a" / "broken.png").write_bytes(b"not a png at all")
    proc = cli("run", _suite(tmp_path, root, extra="    train_samples: [8]"), "--results-dir", tmp_path / "res",
               "--price-per-device-hour", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped 1 unreadable image(s)" in proc.stderr and "broken.png" in proc.stderr
    (record,) = Store(tmp_path / "res").records()
    assert record["status"] == "ok" and record["eval_samples"] == 12


@pytest.mark.slow
def test_a_task_defined_outside_the_package_runs_a_suite(tmp_path):
    write_xor_task(tmp_path, "my_tasks", "xor", hidden=8)  # its linear-probe head: 8 x 2 + 2 parameters
    (tmp_path / "s.yaml").write_text("""
name: outside
imports: [my_tasks]
defaults: {seeds: [0], epochs: 20, batch_size: 30, lr: 0.05}
benchmarks:
  - task: xor
    dataset: builtin:none-needed
    models: [mlp]
    modes: [scratch, linear-probe]
""")
    proc = cli("run", tmp_path / "s.yaml", "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
               env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = {r["mode"]: r for r in Store(tmp_path / "res").records()}
    assert records["scratch"]["metric"] > 0.8 and records["scratch"]["eval_samples"] == 100
    assert records["linear-probe"]["params_trainable"] == 18  # the 8x2 head and its bias only
