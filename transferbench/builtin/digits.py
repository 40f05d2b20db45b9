"""builtin:digits: REAL 8x8 handwritten digits (UCI, via scikit-learn) upsampled to 32x32 RGB, 1,438 train / 359 test.

Dataset card (built-in, real data, offline).

What it is
    REAL handwritten digits: the 1,797 images of the UCI "Optical Recognition of
    Handwritten Digits" data set (test part), as bundled with scikit-learn and
    returned by ``sklearn.datasets.load_digits()``. Nothing is downloaded; the
    data ships inside the scikit-learn package. Each original image is an 8x8
    grid of ink counts from 0 to 16, made by counting the ink pixels of a 32x32
    bitmap of a digit written by one of 43 people in non-overlapping 4x4 blocks.

How the images here are made
    Each 8x8 grid is scaled from 0..16 to 0..255, inverted so that the digit is
    DARK ON A LIGHT BACKGROUND (white paper = 255, full ink = 0), upsampled to
    32x32 with Pillow's bicubic resampling (on floating-point values), clipped to
    0..255, rounded to 8-bit and stored as an RGB PNG with three equal channels.
    The upsampling restores the image size, not the detail: the pictures are
    blurry, soft-edged 32x32 versions of the 8x8 grids.

Classes (10)
    ``0``, ``1``, ..., ``9`` (folder names; the digit shown), about 180 images each.

Splits
    Stratified 80/20 per class with a fixed seed: in each class 20% of the
    images (rounded to the nearest whole image) go to ``test`` and the rest to
    ``train``. ``train``: 1,438 images; ``test``: 359 images. The split is
    random, not by writer: the original data has no writer ids, so the same
    person's handwriting can appear in both splits.

Layout
    A Hugging Face ``imagefolder``: ``train/<class>/<n>.png`` and
    ``test/<class>/<n>.png``, numbered from 0000 within each class in the order
    of the original data set. ``write`` is deterministic: the same bytes on
    every run.

Intended use
    The small, real target task of the image benchmarks: digit recognition with
    little training data, to compare fine-tuning a pretrained model against
    training from scratch. Too small and too easy to measure state-of-the-art
    digit recognition; report it only as what it is.

License / source
    UCI Machine Learning Repository, "Optical Recognition of Handwritten Digits"
    (E. Alpaydin, C. Kaynak, 1998), licensed CC BY 4.0; copy taken from
    scikit-learn (BSD-3-Clause). The conversion code is part of this project.

Versioning
    ``VERSION`` is bumped whenever the written content changes.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

NAME = "digits"
VERSION = 1
CLASSES = [str(d) for d in range(10)]

_SEED = 20240611
_TEST_FRACTION = 0.2
_SIZE = 32


def _to_image(grid: np.ndarray) -> Image.Image:
    """8x8 grid of ink counts 0..16 -> 32x32 RGB image, dark digit on light background."""
    paper = 255.0 - grid.astype(np.float32) * (255.0 / 16.0)
    big = Image.fromarray(paper).resize((_SIZE, _SIZE), Image.Resampling.BICUBIC)
    pixels = np.clip(np.rint(np.asarray(big, dtype=np.float32)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def _split_indices(labels: np.ndarray) -> dict[str, dict[int, np.ndarray]]:
    """{"train"|"test": {digit: sorted indices into the data set}}, stratified per class."""
    rng = np.random.default_rng(_SEED)
    splits: dict[str, dict[int, np.ndarray]] = {"train": {}, "test": {}}
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        shuffled = rng.permutation(members)
        n_test = int(round(len(members) * _TEST_FRACTION))
        splits["test"][digit] = np.sort(shuffled[:n_test])
        splits["train"][digit] = np.sort(shuffled[n_test:])
    return splits


def write(folder: pathlib.Path) -> None:
    """Write the dataset as a standard Hugging Face `imagefolder`: folder/train/<class>/<n>.png and folder/test/<class>/<n>.png."""
    from sklearn.datasets import load_digits  # bundled data, no download

    folder = pathlib.Path(folder)
    data = load_digits()
    images = np.asarray(data.images)
    labels = np.asarray(data.target)
    for split, by_digit in _split_indices(labels).items():
        for digit, indices in by_digit.items():
            class_dir = folder / split / CLASSES[digit]
            class_dir.mkdir(parents=True, exist_ok=True)
            for n, index in enumerate(indices):
                _to_image(images[index]).save(class_dir / f"{n:04d}.png", format="PNG")
