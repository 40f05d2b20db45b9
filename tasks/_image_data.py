"""The image task's data pipeline: decoding and resizing once per (dataset, image size) through `datasets.map`,
which caches the uint8 result on disk, and per-batch normalisation and augmentation on tensors. Torch-free at import:
a dry run decodes without it."""
from __future__ import annotations

import functools
import sys
import warnings

import numpy as np

from transferbench import sources
from transferbench.config import DatasetSpec
from transferbench.errors import UserError
from transferbench.lazy import lazy

from . import class_labels, require_columns

torch = lazy("torch")


def augmentation(name: str, size: int):
    """The preset's torchvision v2 transform of one uint8 CHW image (None for off). light: small crops (digits,
    text-like images, where a flip changes the class); standard: crops down to 35% of the area, horizontal flips,
    colour jitter; trivial: the same crops and flips, then TrivialAugmentWide (one random op of random strength)."""
    if name == "off":
        return None
    from torchvision.transforms import v2

    def crop(scale, ratio=(3 / 4, 4 / 3)):
        return v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)

    if name == "light":
        return crop((0.8, 1.0), (0.9, 1.1))
    last = v2.ColorJitter(0.3, 0.3, 0.3) if name == "standard" else v2.TrivialAugmentWide()
    return v2.Compose([crop((0.35, 1.0)), v2.RandomHorizontalFlip(), last])


class ImageCollate:
    """uint8 HWC images -> normalised float NCHW batch, with per-example augmentation when training: a new draw
    per example and epoch from the collate's own random stream. It starts from the run's seed (offset by the process
    rank) at the first training batch and runs on through the run's trainings (a search's candidates, a plateau
    phase, the final training): the same seed gives the same augmented batches, in every mode, and the model's
    initialisation, dropout and shuffling draw the same numbers with or without augmentation."""

    def __init__(self, size: int, mean, std, augment: str = "off"):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.augment = augmentation(augment, size)
        self._rng = None  # the stream's torch CPU generator state, started on the first training batch

    def __call__(self, examples):
        x = torch.stack([e["pixel_values"] for e in examples]).permute(0, 3, 1, 2)
        if self.augment is not None:  # on uint8, as torchvision's photometric ops expect
            x = self._augmented(x)
        x = x.float().div_(255)
        return {"pixel_values": (x - self.mean) / self.std,
                "labels": torch.tensor([int(e["labels"]) for e in examples])}

    def _augmented(self, x):
        # torchvision's v2 transforms draw from torch's global CPU generator: it is swapped for the stream's state
        # around them and restored after, which leaves the training's own draws untouched
        outer = torch.get_rng_state()
        if self._rng is None:  # the loop has seeded torch with the run's seed (set_seed) before training
            dist = torch.distributed
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
            self._rng = torch.Generator().manual_seed((torch.initial_seed() + 7919 * (rank + 1)) % 2**63).get_state()
        torch.set_rng_state(self._rng)
        try:
            return torch.stack([self.augment(img) for img in x])
        finally:
            self._rng = torch.get_rng_state()
            torch.set_rng_state(outer)


MAX_PIXELS = 64 * 2**20  # larger pictures are skipped as unreadable (a decompression bomb's header claims more)


def decode_resize(batch, image: str, size: int, bad: list):
    """Decode and resize once (cached by datasets); unreadable files are marked and reported, not fatal."""
    import io

    from PIL import Image, UnidentifiedImageError

    out, ok = [], []
    for item in batch[image]:
        try:
            with warnings.catch_warnings():  # a picture above MAX_PIXELS is a decompression bomb: skipped
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = item if isinstance(item, Image.Image) else Image.open(
                    io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"])
                if img.width * img.height > MAX_PIXELS:
                    raise ValueError(f"{img.width}x{img.height} pixels is above the limit of {MAX_PIXELS}")
                arr = np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
            out.append(arr)
            ok.append(True)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                Image.DecompressionBombWarning):
            bad.append(item.get("path") if isinstance(item, dict) else "?")
            out.append(np.zeros((size, size, 3), np.uint8))
            ok.append(False)
    return {"pixel_values": out, "_ok": ok}


@functools.lru_cache(maxsize=8)
def prepared(dataset_json: str, size: int) -> tuple:
    dd, labels, identity = decoded(dataset_json, size)
    return {name: in_memory(split) for name, split in dd.items()}, labels, identity


@functools.lru_cache(maxsize=8)
def decoded(dataset_json: str, size: int) -> tuple:
    """(the splits decoded and resized to uint8 `size` x `size`, unreadable images dropped, class names, identity):
    torch-free, shared by a run's preparation and a dry run's check."""
    import datasets

    dataset = DatasetSpec.model_validate_json(dataset_json)
    image, label = dataset.columns.get("image", "image"), dataset.columns.get("label", "label")
    dd = sources.load(dataset)
    if label == "label" and dd["train"].column_names == [image]:  # imagefolder adds labels for 2+ class folders
        raise UserError(f"dataset '{dataset.source}' has no labels: an imagefolder needs one sub-folder per class, "
                        f"at least 2 (e.g. train/cat/*.png, train/dog/*.png)")
    require_columns(dd, {"image": image, "label": label}, dataset.source)
    if not isinstance(dd["train"].features[image], datasets.Image):
        raise UserError(f"dataset '{dataset.source}': column '{image}' holds {dd['train'].features[image]}, not "
                        f"images; set dataset.columns.image")
    dd, labels = class_labels(dd, label, dataset.source)
    dd = dd.cast_column(image, datasets.Image(decode=False))  # decode ourselves: a corrupt file is one warning
    bad: list = []
    features = datasets.Features({"pixel_values": datasets.Array3D((size, size, 3), "uint8"),
                                  "_ok": datasets.Value("bool"), label: dd["train"].features[label]})
    dd = dd.map(decode_resize, batched=True, batch_size=256, fn_kwargs={"image": image, "size": size, "bad": bad},
                remove_columns=[c for c in dd["train"].column_names if c != label], features=features)
    flagged = [split for split in dd if not all(dd[split]["_ok"])]
    if flagged:
        names = ", ".join(str(b) for b in bad[:5]) or "(listed in an earlier run: the map result is cached)"
        n = sum(dd[s].num_rows - sum(dd[s]["_ok"]) for s in flagged)
        print(f"transferbench: warning: skipped {n} unreadable image(s) in '{dataset.source}': {names}",
              file=sys.stderr)
        dd = dd.filter(lambda b: b["_ok"], batched=True, input_columns=None)
    dd = dd.remove_columns("_ok").rename_column(label, "labels")
    return dd, labels, dataset.source + (f"/{dataset.config}" if dataset.config else "")


IN_MEMORY_BYTES = 4 * 2**30  # larger splits stay memory-mapped Arrow (e.g. ImageNet-sized data at 224 px)


def in_memory(split):
    from ._image_torch import Examples

    nbytes = split.num_rows * int(np.prod(split.features["pixel_values"].shape))
    if nbytes > IN_MEMORY_BYTES:
        return split.with_format("torch")
    columns = split.with_format("torch")[:]
    columns["pixel_values"] = columns["pixel_values"].to(torch.uint8)
    return Examples(columns)
