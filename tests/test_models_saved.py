"""save_models: final: every run's final weights saved the ecosystem's way under <results>/models/<run_id>, and
loading them back with the library's own loader gives the trained model's very outputs."""
import textwrap

import pytest
import torch

from helpers import run_main, write_suite
from transferbench.builtin import materialize
from transferbench.config import load_suite
from transferbench.results import Store


def _trained(suite, tmp_path):
    """(spec, outcome) of the suite's only run through the HF loop in this process, saving to tmp_path/model."""
    from transferbench.runners.train import hf_loop
    from transferbench.runners.orchestrate.execute import accelerator_for
    from transferbench.runners.orchestrate.suite import expand_runs
    from transferbench.tasks import get_task

    (spec,) = expand_runs(load_suite(suite))
    out = hf_loop.run(spec, get_task(spec.task)(spec.task_args), spec.model, accelerator_for(spec),
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
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
        # transformers' PEFT integration: the base from adapter_config.json, then the adapter and the head
        loaded = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=4)
        assert hasattr(loaded, "peft_config")
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
