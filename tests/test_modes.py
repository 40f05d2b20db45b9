"""Each mode trains exactly what it says, on the model the task builds; a new classification head starts as the
library's own reset makes it, in every mode."""
import math

import pytest
import torch

from transferbench.config import Hyper
from transferbench.modes import count_parameters, get_mode
from transferbench.tasks import get_task


@pytest.mark.parametrize("pretrained", [True, False])
def test_timm_head_starts_like_timms_reset_classifier(pretrained):
    task = get_task("image-classification")({"image_size": 32})
    torch.manual_seed(0)
    model = task.build_model("efficientnet-lite0", [str(i) for i in range(10)], pretrained=pretrained)
    head = model.get_submodule(task.head_names(model)[0])
    reference = torch.nn.Linear(head.in_features, 10)  # what timm's reset_classifier builds
    assert head.weight.std().item() == pytest.approx(reference.weight.std().item(), rel=0.1)
    assert head.weight.abs().max().item() <= 1 / math.sqrt(head.in_features) + 1e-6  # nn.Linear's bound
    # logits start small: the loss of an untrained head is about ln(classes), not ~16
    with torch.inference_mode():
        logits = model.eval()(pixel_values=torch.randn(8, 3, 32, 32)).logits
    assert logits.abs().max().item() < 2.0


LABELS = ["a", "b", "c", "d"]


def build(ref, mode_name, hyper=Hyper()):
    task = get_task("text-classification")({})
    mode = get_mode(mode_name)
    torch.manual_seed(1)
    model = task.build_model(ref, LABELS, pretrained=mode.pretrained)
    targets = task.lora_targets_for(model, hyper.lora_targets) if mode_name == "lora" else []
    return mode.prepare(model, task.head_names(model), targets, hyper)


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_scratch_is_the_same_config_randomly_initialised(tiny_bert):
    from transformers import AutoModel

    ckpt = AutoModel.from_pretrained(tiny_bert).state_dict()
    scratch, finetune = build(tiny_bert, "scratch"), build(tiny_bert, "finetune")
    assert scratch.config.to_diff_dict() == finetune.config.to_diff_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(finetune.bert.state_dict()[key], ckpt[key])  # finetune starts from the checkpoint
    assert not torch.allclose(scratch.bert.state_dict()[key], ckpt[key])  # scratch does not
    assert _trainable(scratch) == {n for n, _ in scratch.named_parameters()}


def test_linear_probe_trains_only_the_head(tiny_bert):
    model = build(tiny_bert, "linear-probe")
    assert _trainable(model) == {"classifier.weight", "classifier.bias"}


def test_lora_freezes_the_base_and_trains_adapters_and_head(tiny_bert):
    model = build(tiny_bert, "lora")
    trainable = _trainable(model)
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    assert any("query.lora_A" in n for n in trainable) and any("value.lora_B" in n for n in trainable)
    assert any("classifier" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    batch = {"input_ids": torch.randint(0, 1000, (4, 8)), "labels": torch.tensor([0, 1, 2, 3])}
    for _ in range(2):  # LoRA B starts at zero: the second step moves A too
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and changed <= trainable
    assert any("lora_A" in n for n in changed) and any("classifier" in n for n in changed)


def test_lora_on_minilm_trains_under_one_percent():
    model = build("all-minilm-l6-v2", "lora")
    total, trainable = count_parameters(model)
    assert 0 < trainable / total < 0.01


def test_lora_targets_are_overridable_and_checked(tiny_bert):
    model = build(tiny_bert, "lora", Hyper(lora_targets=["key"]))
    assert any("key.lora_A" in n for n in _trainable(model))
    assert not any("query.lora_A" in n for n in _trainable(model))
    from transferbench.errors import UserError

    with pytest.raises(UserError, match="do not fit"):
        build(tiny_bert, "lora", Hyper(lora_targets=["nonexistent_proj"]))
