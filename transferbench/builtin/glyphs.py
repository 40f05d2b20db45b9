"""builtin:glyphs: SYNTHETIC rendered capital letters A-K (no I), 32x32 RGB, 6,000 train / 1,000 test, a pretraining source.

Dataset card (built-in, synthetic, offline).

What it is
    A SYNTHETIC image-classification dataset of rendered capital letters. Every
    image is drawn on the fly with Pillow from its built-in scalable font
    (``PIL.ImageFont.load_default(size=...)``, the Aileron Regular typeface that
    ships inside Pillow) and then randomly distorted. Nothing is downloaded, no
    system font is used, and no real-world images are included.

Classes (10, balanced)
    ``A``, ``B``, ``C``, ``D``, ``E``, ``F``, ``G``, ``H``, ``J``, ``K`` (folder
    names; the letter shown). ``I`` is left out because it looks like a ``1``.

Splits
    ``train``: 600 images per class (6,000 in total).
    ``test``:  100 images per class (1,000 in total).
    Both splits are drawn independently from the same distribution, from two
    separate random streams of one fixed seed, so ``write`` is deterministic:
    the same bytes on every run.

How an image is made
    Images are 32x32 RGB with three equal channels (grey levels). Each letter is
    drawn white on black at 4x resolution (128x128) with a random font size
    (cap height roughly 14-24 pixels of the final image) and a random stroke
    thickness (outline widening from none to about 7% of the font size),
    centred on its ink and shifted by a random offset of up to 3 final pixels
    per axis (less when the letter would leave the picture). It is then turned
    by a random angle in -15..15 degrees and slanted by a random horizontal
    shear in -0.15..0.15, both about the picture centre with bicubic
    resampling, and reduced to 32x32 by area averaging, which gives soft,
    anti-aliased edges. The letter and background get two random grey levels
    at least 100 apart, the letter always the darker one (dark ink on light
    paper, the same polarity as ``builtin:digits``), and gaussian noise with a
    random standard deviation of 2-8 grey levels is added before rounding and
    clipping to 8-bit.

Layout
    A Hugging Face ``imagefolder``: ``train/<class>/<n>.png`` and
    ``test/<class>/<n>.png``, numbered from 0000 within each class.

Intended use
    A larger, different source task for pretraining small image models before
    fine-tuning on a digit-recognition target such as ``builtin:digits``: the
    same picture size and a related skill (recognising thin handwritten-like
    strokes of a 10-way symbol alphabet) without containing any digits. Not a
    benchmark of letter recognition on real text: one typeface only, no
    handwriting, clean synthetic backgrounds.

Limitations
    A single typeface with simple geometric distortions, so the variety is far
    below that of real handwriting or photographed text. Some letter pairs
    (``E``/``F``, ``C``/``G``) differ only in small details that can be
    blurred away at the smallest sizes.

License
    Same as the project that ships this file. The Aileron font embedded in
    Pillow is public domain (CC0); Pillow itself is under the MIT-CMU license.

Versioning
    ``VERSION`` is bumped whenever the written content changes.
"""

from __future__ import annotations

import math
import pathlib
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

NAME = "glyphs"
VERSION = 1
CLASSES = ["A", "B", "C", "D", "E", "F", "G", "H", "J", "K"]

_SEED = 20240612
_PER_CLASS = {"train": 600, "test": 100}
_SIZE = 32  # final picture size in pixels
_SCALE = 4  # letters are drawn at _SCALE times the final size, then reduced
_FONT_SIZES = (20, 34)  # font size range in final pixels (cap height is about 0.7 of it)
_MAX_SHIFT = 3.0  # final pixels per axis
_MAX_ANGLE = 15.0  # degrees
_MAX_SHEAR = 0.15
_MIN_CONTRAST = 100  # grey levels between letter and background
_NOISE = (2.0, 8.0)  # gaussian noise standard deviation range, grey levels


@lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.load_default(size=size)
    if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow built without FreeType
        raise RuntimeError("builtin:glyphs needs Pillow with FreeType support (a scalable default font)")
    return font


def _ink(letter: str, rng: np.random.Generator) -> np.ndarray:
    """Coverage of the letter in 0..1 as a float32 array of shape (_SIZE, _SIZE)."""
    big = _SIZE * _SCALE
    size = int(rng.integers(_FONT_SIZES[0], _FONT_SIZES[1] + 1)) * _SCALE
    stroke = int(rng.integers(0, size // 14 + 1))
    font = _font(size)
    left, top, right, bottom = font.getbbox(letter, stroke_width=stroke)
    width, height = right - left, bottom - top
    # random offset of the ink centre from the picture centre, kept inside the picture
    slack_x = max(0.0, (big - width) / 2 - _SCALE)
    slack_y = max(0.0, (big - height) / 2 - _SCALE)
    dx = rng.uniform(-1.0, 1.0) * min(_MAX_SHIFT * _SCALE, slack_x)
    dy = rng.uniform(-1.0, 1.0) * min(_MAX_SHIFT * _SCALE, slack_y)
    canvas = Image.new("L", (big, big), 0)
    origin = (big / 2 + dx - (left + right) / 2, big / 2 + dy - (top + bottom) / 2)
    ImageDraw.Draw(canvas).text(origin, letter, fill=255, font=font, stroke_width=stroke, stroke_fill=255)

    # rotation and shear about the centre; PIL wants the output -> input mapping
    angle = math.radians(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
    shear = rng.uniform(-_MAX_SHEAR, _MAX_SHEAR)
    cos, sin = math.cos(angle), math.sin(angle)
    forward = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    inverse = np.linalg.inv(forward)
    centre = np.array([big / 2, big / 2])
    offset = centre - inverse @ centre
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    canvas = canvas.transform((big, big), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)

    small = canvas.resize((_SIZE, _SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _picture(letter: str, rng: np.random.Generator) -> Image.Image:
    ink = _ink(letter, rng)
    while True:
        darker, lighter = sorted(int(level) for level in rng.integers(0, 256, size=2))
        if lighter - darker >= _MIN_CONTRAST:
            break
    foreground, background = darker, lighter  # dark letter on light background, like builtin:digits
    grey = background + (float(foreground) - float(background)) * ink
    grey = grey + rng.normal(0.0, rng.uniform(*_NOISE), size=grey.shape)
    pixels = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def write(folder: pathlib.Path) -> None:
    """Write the dataset as a standard Hugging Face `imagefolder`: folder/train/<class>/<n>.png and folder/test/<class>/<n>.png."""
    folder = pathlib.Path(folder)
    streams = np.random.SeedSequence(_SEED).spawn(len(_PER_CLASS))
    for (split, per_class), stream in zip(_PER_CLASS.items(), streams):
        rng = np.random.default_rng(stream)
        for letter in CLASSES:
            class_dir = folder / split / letter
            class_dir.mkdir(parents=True, exist_ok=True)
            for n in range(per_class):
                _picture(letter, rng).save(class_dir / f"{n:04d}.png", format="PNG")
