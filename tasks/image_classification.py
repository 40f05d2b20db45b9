"""image-classification: AutoModelForImageClassification (ViT, ResNet, ...) or a timm model.

Model references: a Hub id or save_pretrained directory (transformers); `timm/REPO` (a timm Hub id),
`timm:NAME` (a timm architecture with its default pretrained weights), `timm:NAME@FILE` (a local weights file),
`timm:local-dir:PATH` (a folder written by timm's save_for_hf).
Its data pipeline (decoding, caching, collation) is tasks/_image_data.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from transferbench import flops, model_files, models
from transferbench.config import DatasetSpec
from transferbench.errors import UserError
from transferbench.lazy import lazy

from . import Task, TaskData, register_task
from ._image_data import ImageCollate, decoded, prepared

torch = lazy("torch")  # imported when the task prepares data or builds a model, not when it is registered

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ImageArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: Optional[int] = Field(None, gt=0)  # None: the model's image processor / timm data config
    # training batches only, drawn anew each epoch from the run's seed (presets: _image_data.augmentation): off;
    # light (small crops); standard (crops, flips, colour jitter); trivial (crops, flips, TrivialAugmentWide)
    augment: Optional[Literal["off", "light", "standard", "trivial"]] = "off"  # null: off
    # BatchNorm running-statistics momentum for every mode (None: the model's own). TF-ported timm models
    # (tf_*) keep TensorFlow's 0.01, made for long schedules: after a few dozen steps their running statistics
    # have barely left ImageNet's, so evaluation of a short fine-tune measures that lag, not the mode
    bn_momentum: Optional[float] = Field(None, gt=0, le=1)


def _timm_name(ref: str, resolve=models.resolve) -> Optional[tuple[str, Optional[str]]]:
    """(timm model name, local weights file) for a timm reference, else None. resolve=model_files.resolve: an
    alias's reference without converting its weights (a check)."""
    ref = resolve(ref)
    if ref.startswith("timm/"):
        return "hf-hub:" + ref, None
    if not ref.startswith("timm:"):
        return None
    name, _, file = ref[len("timm:"):].partition("@")
    return name, file or None


def _create_timm(name: str, file: Optional[str], num_classes: int, pretrained: bool):
    import timm

    overlay = {"file": file} if file else None
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, pretrained_cfg_overlay=overlay)
        # A new head starts as timm's own reset makes it (a plain nn.Linear init), in every mode: some families'
        # construction-time init (EfficientNet's, uniform ±1/sqrt(classes)) gives logits ~50x larger, an initial
        # loss near 16 for 10 classes, and gradients that wreck a pretrained backbone in the first steps
        model.reset_classifier(num_classes)
        return model
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise UserError(f"unknown timm model '{name}' (see timm.list_models())") from None
        raise
    except OSError:
        raise UserError(f"timm model '{name}': pretrained weights cannot be downloaded here (offline or unreachable);"
                        f" give a local file as `timm:{name.removeprefix('hf-hub:')}@/path/weights.safetensors`") from None


def preprocessing(ref: str) -> tuple[int, tuple, tuple, object]:
    """(square input size, mean, std, the processor to save with a checkpoint) as the model's own image
    processor or timm data config says."""
    timm_ref = _timm_name(ref)
    if timm_ref:
        import timm

        name, file = timm_ref
        if name.startswith("local-dir:") or name.startswith("hf-hub:"):
            cfg = timm.data.resolve_data_config({}, model=_create_timm(name, None, 2, pretrained=False))
        else:
            cfg = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
        return cfg["input_size"][-1], tuple(cfg["mean"]), tuple(cfg["std"]), None
    from transformers import AutoConfig, AutoImageProcessor

    path = models.resolve(ref)
    try:
        proc = AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError):  # an architecture config without a processor (a stage from scratch)
        config = models.from_pretrained(AutoConfig, ref)
        size = getattr(config, "image_size", 224)
        from transformers import ViTImageProcessor

        proc = ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    size = proc.size
    side = size.get("height") or size.get("shortest_edge") or 224
    mean = tuple(getattr(proc, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(proc, "image_std", None) or IMAGENET_STD)
    return int(side), mean, std, proc


def _size_without_torch(ref: str) -> Optional[int]:
    """The side `preprocessing` gives a transformers model, read from its files (None for a timm model or a
    processor file without a size): a dry run decodes the images at the size the run will, so the run finds the
    decoded data cached."""
    if _timm_name(ref, model_files.resolve):
        return None
    path = model_files.resolve(ref)
    if path.startswith("config:"):
        return int(model_files.config(ref).get("image_size", 224))
    try:
        proc = (Path(path) / "preprocessor_config.json" if Path(path).is_dir()
                else model_files.hub_file(path, "preprocessor_config.json"))
    except (OSError, ValueError):
        return None
    if proc is None or not Path(proc).is_file():  # as preprocessing: a ViT processor at the config's image_size
        return int(model_files.config(ref).get("image_size", 224))
    try:
        size = json.loads(Path(proc).read_text(encoding="utf-8")).get("size")
    except (OSError, ValueError):
        return None
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return int(size) if isinstance(size, (int, float)) and size > 0 else None


CHECK_SIZE = 32  # what a dry run decodes at when the model's size needs torch to know: which images are
# unreadable (what the budgets count) does not depend on it


@register_task
class ImageClassification(Task):
    name = "image-classification"
    metric_names = ("accuracy", "f1")
    Args = ImageArgs
    lora_targets = {  # by the installed libraries' module names (a list: name suffixes; a str: a regex)
        "vit": ["q_proj", "v_proj"], "deit": ["q_proj", "v_proj"], "dinov2": ["q_proj", "v_proj"],
        "swin": ["q_proj", "v_proj"], "convnext": ["pwconv1", "pwconv2"], "resnet": ["convolution"],
        "timm:efficientnet": ["conv_pw", "conv_pwl"], "timm:resnet": r".*layer\d+\.\d+\.conv\d",  # a regex: block convs only (some stems are Sequential)
        "timm:vision_transformer": ["qkv"],
    }
    feedforward_targets = {  # the feed-forward block's second layer (ResNets have none: IA3 scales their convs)
        "vit": ["mlp.fc2"], "deit": ["mlp.fc2"], "dinov2": ["mlp.fc2"], "swin": ["mlp.fc2"], "convnext": ["pwconv2"],
        "timm:efficientnet": ["conv_pwl"], "timm:vision_transformer": ["mlp.fc2"],  # conv_pwl: the 1x1 projection
    }

    def load_data(self, dataset: DatasetSpec, model: str) -> TaskData:
        size, mean, std, proc = preprocessing(model)
        size = self.args.image_size or size
        dd, labels, identity = prepared(dataset.model_dump_json(), size)
        return TaskData(dd["train"], dd["eval"], ImageCollate(size, mean, std, self.args.augment or "off"), labels,
                        identity, eval_collate=ImageCollate(size, mean, std), processor=proc)

    @property
    def augments(self) -> bool:
        """Whether training batches are augmented (a loop that trains on precomputed features cannot)."""
        return (self.args.augment or "off") != "off"

    def check_model(self, model: str) -> None:
        timm_ref = _timm_name(model, model_files.resolve)
        if timm_ref:
            model_files.check_timm(*timm_ref)
        else:
            model_files.check_auto_class(model, "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "an image classifier")

    def check_data(self, dataset: DatasetSpec, model: str) -> int:
        """The images decoded as load_data decodes them (unreadable ones dropped), at the run's size where that is
        known without torch, not moved into tensors; the model's preprocessing is not loaded (timm's and
        transformers' image processors import torch)."""
        size = self.args.image_size or _size_without_torch(model) or CHECK_SIZE
        return decoded(dataset.model_dump_json(), size)[0]["train"].num_rows

    def build_model(self, model: str, labels: list[str], pretrained: bool):
        self._built = built = self._build(model, labels, pretrained)
        if self.args.bn_momentum is not None:
            for m in built.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = self.args.bn_momentum
        self._forward_flops: dict[tuple, float] = {}
        return built

    def flops_per_batch(self, params_total: int, batch) -> Optional[float]:
        """3 x the forward FLOPs of the model this task built (mode applied: it is modified in place), counted
        once per image shape on one example: convolutions and attention are not 2 x params per pixel."""
        model = getattr(self, "_built", None)
        if model is None:
            return None
        x = batch["pixel_values"]
        shape = tuple(x.shape[1:])
        if shape not in self._forward_flops:
            self._forward_flops[shape] = flops.forward_flops(model, pixel_values=x[:1])
        return 3.0 * self._forward_flops[shape] * len(x)

    def _build(self, model: str, labels: list[str], pretrained: bool):
        from ._image_torch import TimmClassifier

        timm_ref = _timm_name(model)
        if timm_ref:
            return TimmClassifier(_create_timm(*timm_ref, num_classes=len(labels), pretrained=pretrained))
        from transformers import AutoConfig, AutoModelForImageClassification

        config = models.from_pretrained(AutoConfig, model, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                        label2id={n: i for i, n in enumerate(labels)})
        if not pretrained:  # fairness rule 1: exactly the checkpoint's config, random init
            return AutoModelForImageClassification.from_config(config)
        # a checkpoint trained on other classes: its head is replaced by a fresh one of the right size
        return models.from_pretrained(AutoModelForImageClassification, model, config=config,
                                      ignore_mismatched_sizes=True)

    def model_type(self, model) -> Optional[str]:
        if _is_timm(model):
            return "timm:" + type(model.model).__module__.rsplit(".", 1)[-1]
        return super().model_type(model)

    def head_names(self, model) -> list[str]:
        if _is_timm(model):
            return ["model." + model.model.pretrained_cfg["classifier"]]
        return super().head_names(model)

    def save_checkpoint(self, model, data: TaskData, path) -> None:
        if _is_timm(model):
            import timm

            # safetensors (timm's default is a pickled pytorch_model.bin): loading it runs no code
            timm.models.save_for_hf(model.model, str(path), model_config={"label_names": data.labels},
                                    safe_serialization=True)
        else:
            super().save_checkpoint(model, data, path)


def _is_timm(model) -> bool:
    from ._image_torch import TimmClassifier

    return isinstance(model, TimmClassifier)
