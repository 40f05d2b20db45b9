"""The EfficientNet-Lite0 weights shipped in a pip package, converted for timm: exact fit, real ImageNet
behaviour, and the fine-tuning use (fresh head, pretrained backbone)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # conftest sets it too; the weights must never come from the Hub

import pytest
import torch

import timm
from safetensors.torch import load_file  # noqa: E402

from transferbench import shipped_weights  # noqa: E402
from transferbench.shipped_weights import efficientnet_lite0_file  # noqa: E402

ARCH = "tf_efficientnet_lite0"
# What a working ImageNet classifier says about scikit-learn's two sample photos (first synonym of each class).
# Kept small on purpose: 20 random-init seeds of this architecture never put any of these in the top 5.
SENSIBLE = {
    "china.jpg": {"palace", "bell cote", "church", "monastery", "stupa", "mosque", "castle"},
    "flower.jpg": {"daisy"},
}


@pytest.fixture(scope="module")
def weights_file() -> str:
    return efficientnet_lite0_file()


@pytest.fixture(scope="module")
def photos():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return {name: Image.fromarray(load_sample_image(name)) for name in SENSIBLE}


def _top5(model, photos) -> dict:
    """Top-5 ImageNet class names (first synonym) per photo, preprocessed the way timm says this model wants."""
    info = timm.data.ImageNetInfo()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.inference_mode():  # one batch for both photos: a forward pass is the slow part on a busy CPU
        logits = model.eval()(torch.stack([transform(img) for img in photos.values()]))
    return {name: [info.index_to_description(i).split(",")[0] for i in row.topk(5).indices.tolist()]
            for name, row in zip(photos, logits)}


def _sensible(top5: dict) -> bool:
    return all(SENSIBLE[name] & set(labels) for name, labels in top5.items())


def test_file_is_cached_atomically(weights_file):
    path = efficientnet_lite0_file()
    assert path == weights_file
    assert path == str(shipped_weights.cache_dir() / "models" / ARCH / "model.safetensors")
    assert path.startswith(os.environ["TRANSFERBENCH_CACHE"])
    assert os.listdir(os.path.dirname(path)) == ["model.safetensors"]  # no temp file left behind


def test_strict_load_1000_classes(weights_file):
    # num_classes matches the file's 1000, so timm loads with strict=True: any missing/extra key would raise.
    model = timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=weights_file))
    saved = load_file(weights_file)
    assert set(saved) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_imagenet_predictions_are_sensible(weights_file, photos):
    model = timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=weights_file))
    top5 = _top5(model, photos)
    assert _sensible(top5), top5


def test_sensible_check_rejects_random_weights(photos):
    # Guards the test above against being vacuous; also checks every expected name is a real ImageNet class.
    info = timm.data.ImageNetInfo()
    names = {info.index_to_description(i).split(",")[0] for i in range(1000)}
    assert set().union(*SENSIBLE.values()) <= names
    torch.manual_seed(0)
    top5 = _top5(timm.create_model(ARCH, pretrained=False), photos)
    assert not _sensible(top5), top5


def test_fine_tune_head_is_fresh_and_backbone_is_pretrained(weights_file):
    # num_classes != 1000: timm drops classifier.* from the file and loads the rest with strict=False, so
    # compare every backbone tensor to be sure nothing else went missing silently.
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=True, pretrained_cfg_overlay=dict(file=weights_file), num_classes=10)
    saved = load_file(weights_file)
    state = model.state_dict()
    assert set(state) == set(saved)
    for k, v in state.items():
        if not k.startswith("classifier."):
            assert torch.equal(v, saved[k]), k
    assert model.get_classifier().out_features == 10
    assert state["classifier.weight"].shape == (10, 1280) and saved["classifier.weight"].shape == (1000, 1280)
    # The head is exactly timm's own random init: same seed, no pretrained weights, same head.
    torch.manual_seed(0)
    fresh = timm.create_model(ARCH, pretrained=False, num_classes=10).state_dict()
    assert torch.equal(state["classifier.weight"], fresh["classifier.weight"])
    assert torch.equal(state["classifier.bias"], fresh["classifier.bias"])
    with torch.inference_mode():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_conversion_refuses_a_mismatched_file(monkeypatch):
    real_load = torch.load

    def load_without_first_tensor(*args, **kwargs):
        sd = real_load(*args, **kwargs)
        sd.pop(next(iter(sd)))
        return sd

    monkeypatch.setattr(torch, "load", load_without_first_tensor)
    with pytest.raises(RuntimeError, match="tensors in the file"):
        shipped_weights._convert_lite0()

    def load_with_swapped_shapes(*args, **kwargs):
        sd = real_load(*args, **kwargs)
        # Stem BN (32) and head BN (1280) swapped: same key count, wrong order; the shape check must catch it.
        sd["_bn0.weight"], sd["_bn1.weight"] = sd["_bn1.weight"], sd["_bn0.weight"]
        return sd

    monkeypatch.setattr(torch, "load", load_with_swapped_shapes)
    with pytest.raises(RuntimeError, match="shape mismatches"):
        shipped_weights._convert_lite0()
