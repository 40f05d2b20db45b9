"""Checkpoints: loading safely (no pickled code, remote code only when trusted, corrupt files refused) and saving
trained models that reload with their library's own loader."""
import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import custom_code_checkpoint, run_main, write_suite
from transferbench.builtin import materialize
from transferbench.config import load_suite
from transferbench.errors import UserError
from transferbench.results import Store
from transferbench.runners.train.hf_save import adapter_base


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


def _trained(suite, tmp_path):
    """(spec, outcome) of the suite's only run through the HF loop in this process, saving to tmp_path/model."""
    from transferbench.runners.train import hf_loop
    from transferbench.runners.orchestrate.execute import accelerator_for
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.tasks import get_task

    (plan,) = plan_runs(load_suite(suite))
    spec = plan.spec
    out = hf_loop.run(plan, get_task(spec.task)(spec.task_args), spec.model, accelerator_for(spec),
                      model_dir=tmp_path / "model")
    assert out.saved_model == str(tmp_path / "model")
    return spec, out


def _batch(out, n=8):
    data = out.data
    return (data.eval_collate or data.collate)([data.eval[i] for i in range(n)])


@pytest.mark.parametrize("mode", ["finetune", "lora"])
def test_transformers_run_reloads_with_from_pretrained(mode, tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes=f"[{mode}]", budget="[32]")
    spec, out = _trained(suite, tmp_path)
    folder = tmp_path / "model"
    files = {p.name for p in folder.iterdir()}
    assert "tokenizer.json" in files  # the tokenizer travels with the weights
    if mode == "lora":  # the adapter (and the head peft keeps in full), not a copy of the base model
        from peft import AutoPeftModelForSequenceClassification

        assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
        # the base it names: the starting model saved once with this task's head and label maps, so peft's Auto class
        # (and transformers' PEFT integration) reload it with no hand-given num_labels
        base = Path(adapter_base(folder))
        assert base.parent == tmp_path and base.name.startswith("base-") and (base / "model.safetensors").is_file()
        loaded = AutoPeftModelForSequenceClassification.from_pretrained(folder)
        assert loaded.config.id2label == dict(enumerate(out.data.labels)) and loaded.config.num_labels == 4
        also = AutoModelForSequenceClassification.from_pretrained(folder)
        assert hasattr(also, "peft_config")
    else:
        assert {"config.json", "model.safetensors"} <= files
        loaded = AutoModelForSequenceClassification.from_pretrained(folder)
        assert loaded.config.id2label[0] == out.data.labels[0]  # the label map is in the config
    batch = _batch(out)
    trained = out.model.eval()
    loaded.eval()
    with torch.no_grad():
        want = trained(**{k: v for k, v in batch.items() if k != "labels"}).logits
        got = loaded(**{k: v for k, v in batch.items() if k != "labels"}).logits
        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=4).eval()
        untrained = base(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(untrained, want, atol=1e-3)  # the test can tell trained weights from others


def test_timm_run_reloads_with_timm_create_model(tmp_path):
    import timm

    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""
        name: img
        defaults: {seeds: [0], epochs: 1, batch_size: 8, lr: default}
        benchmarks:
          - {task: image-classification, dataset: builtin:digits, models: ["timm:resnet10t"], modes: [scratch],
             train_samples: [16], task_args: {image_size: 32}}
        """))
    spec, out = _trained(suite, tmp_path)
    folder = tmp_path / "model"
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # timm's own format (save_for_hf)
    assert loaded.pretrained_cfg["label_names"] == out.data.labels
    batch = _batch(out)
    with torch.no_grad():
        want = out.model.eval()(pixel_values=batch["pixel_values"]).logits
        got = loaded(batch["pixel_values"])
    assert torch.allclose(got, want, atol=1e-5)


def test_suite_saves_under_models_by_run_id_only_when_asked(tiny_bert, tmp_path):
    plain = write_suite(tmp_path / "plain.yaml", tiny_bert, modes="[linear-probe]", budget="[32]")
    saving = write_suite(tmp_path / "saving.yaml", tiny_bert, modes="[linear-probe]", budget="[32]",
                         extra="    save_models: final\n")
    assert run_main("run", plain, "--results-dir", tmp_path / "a") == 0
    assert run_main("run", saving, "--results-dir", tmp_path / "b") == 0
    (a,), (b,) = Store(tmp_path / "a").records(), Store(tmp_path / "b").records()
    assert a["run_id"] == b["run_id"]  # an output setting: neither identity nor recorded config
    assert a["saved_model"] is None and not (tmp_path / "a" / "models").exists()
    assert b["saved_model"] == str(tmp_path / "b" / "models" / b["run_id"])
    assert sorted(p.name for p in (tmp_path / "b" / "models").iterdir()) == [b["run_id"]]
    assert (tmp_path / "b" / "models" / b["run_id"] / "model.safetensors").stat().st_size > 10_000


def test_yolo_run_keeps_one_stripped_checkpoint_of_its_final_weights(tmp_path, monkeypatch):
    from transferbench.runners.train import yolo_fit
    from transferbench.runners.orchestrate.suite import run_suite

    trainers = []
    make = yolo_fit._trainer_class

    def spy():
        cls = make()

        class Spy(cls):
            def get_model(self, *a, **k):
                trainers.append(self)
                return super().get_model(*a, **k)
        return Spy

    monkeypatch.setattr(yolo_fit, "_trainer_class", spy)
    data = materialize("shapes") / "data.yaml"
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent(f"""
        name: det
        defaults: {{seeds: [0], epochs: 2, batch_size: 8, save_models: final, lr: default}}
        benchmarks:
          - {{task: object-detection, dataset: {data}, models: [yolov8n.yaml], modes: {{scratch: {{lr: 1.0e-2}}}},
             train_samples: [16], task_args: {{imgsz: 32, ultralytics: {{mosaic: 0.0}}}}}}
        """))
    (res,) = run_suite(load_suite(suite), tmp_path / "res")
    assert res.status == "ok", res.error
    folder = tmp_path / "res" / "models" / res.run_id
    assert res.saved_model == str(folder)
    assert [p.name for p in folder.iterdir()] == ["last.pt"]
    assert not list((tmp_path / "res" / "work").rglob("*.pt"))  # nothing else keeps a checkpoint

    from ultralytics import YOLO

    ckpt = torch.load(folder / "last.pt", weights_only=False)
    assert ckpt["optimizer"] is None and ckpt["ema"] is None  # stripped, as Ultralytics ships weights
    loaded = YOLO(str(folder / "last.pt")).model.float().state_dict()
    final = trainers[-1].ema.ema.state_dict()  # what every evaluation of the run scored
    assert loaded.keys() == final.keys()
    for name, tensor in final.items():  # saved in fp16, as Ultralytics saves
        if tensor.is_floating_point():
            assert torch.allclose(loaded[name], tensor, atol=1e-3, rtol=1e-3), name
        else:
            assert torch.equal(loaded[name], tensor), name


def test_image_adapter_reloads_with_peft_auto_model(tmp_path):
    """An HF image classifier's LoRA adapter (a checkpoint whose head has other classes) reloads with
    peft.AutoPeftModel, no arguments: the base with this task's 10 digit classes, the adapter and the trained head."""
    from peft import AutoPeftModel
    from transformers import ResNetConfig, ResNetForImageClassification

    ckpt = tmp_path / "resnet"
    torch.manual_seed(0)
    ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8,
                                              num_labels=3)).save_pretrained(ckpt)
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent(f"""
        name: img
        defaults: {{seeds: [0], epochs: 1, batch_size: 8, lr: default}}
        benchmarks:
          - {{task: image-classification, dataset: builtin:digits, models: ["{ckpt}"], modes: [lora],
             train_samples: [16], task_args: {{image_size: 32}}}}
        """))
    spec, out = _trained(suite, tmp_path)
    loaded = AutoPeftModel.from_pretrained(tmp_path / "model").eval()
    assert loaded.config.id2label == dict(enumerate(out.data.labels)) and loaded.config.num_labels == 10
    batch = _batch(out)
    with torch.no_grad():
        want = out.model.eval()(pixel_values=batch["pixel_values"]).logits
        got = loaded(pixel_values=batch["pixel_values"]).logits
    assert torch.allclose(got, want, atol=1e-5)
