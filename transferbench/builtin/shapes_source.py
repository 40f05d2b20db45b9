"""builtin:shapes-source: SYNTHETIC detection pretraining source (YOLO format), 6 other shapes, busy textures, 2,000 train / 200 val.

Dataset card (built-in, synthetic, offline).

What it is
    A SYNTHETIC object-detection dataset of simple shaded shapes on busy
    backgrounds, generated on the fly with numpy and Pillow from a fixed seed
    by the same machinery as ``builtin:shapes``; nothing is downloaded and no
    real-world images are included. Each image holds 1 to 4 labelled objects,
    each with a tight axis-aligned bounding box.

Classes (6)
    ``0: ring``, ``1: diamond`` (a tall rhombus), ``2: star`` (five points),
    ``3: ellipse``, ``4: hexagon``, ``5: plus`` (an upright +). None of them is
    a class of ``builtin:shapes``. The classes are about equally frequent.

Splits
    ``train``: 2,000 images; ``val``: 200 images (about 2.5 objects per image).
    Both splits are drawn independently from the same distribution, from two
    separate random streams of one fixed seed, so ``write`` is deterministic:
    the same bytes on every run.

How an image is made
    Images are 64x64 RGB. Compared with ``builtin:shapes`` the statistics are
    deliberately different: backgrounds are mostly textured and high-contrast
    (smooth multi-colour noise 35%, stripes 20%, checkerboard 15%, gradient
    15%, plain 15%; any two colours, not only muted ones), 70% of the images get
    2-8 unlabelled distractors (thin lines and small dots), and objects are
    shaded (a linear brightness falloff of up to +-35% across the object) in
    any RGB colour. Then 1 to 4 objects (equally likely) are drawn, one after
    another: a random class, a size of 10-34 pixels (the width of the unturned
    shape), a random position (up to 20% of it may leave the picture) and a
    colour that differs from what lies under it. Stars, ellipses and hexagons
    are always turned by a random angle, diamonds half of the time and pluses a
    third of the time (a little). Each shape is filled at 4x resolution and
    reduced by area averaging (anti-aliased edges). A later object may partly
    hide an earlier one, but every object keeps at least 60% of its area
    visible; placements breaking this are redrawn. Finally gaussian noise with
    a random standard deviation of 2-10 levels is added before rounding to
    8-bit.

Boxes
    The box of an object is the tight bounding box of the pixels where at least
    half of the pixel shows that object (after occlusion and clipping to the
    picture). Boxes are at least 4 pixels wide and high. Distractors have no
    boxes.

Layout
    The standard Ultralytics YOLO layout: ``images/train/NNNNNN.png``,
    ``labels/train/NNNNNN.txt`` (same for ``val``), one line per object
    ``class_id cx cy w h`` normalised to 0-1 with 6 decimals, and ``data.yaml``
    with ``train: images/train``, ``val: images/val``, ``nc`` and ``names``, and
    no ``path`` key (Ultralytics resolves the split folders relative to the
    yaml file's folder).

Intended use
    A larger, different source task for pretraining small detectors before
    fine-tuning on ``builtin:shapes``: the same picture size and the same skill
    (finding and boxing compact objects of a few shape classes on varied
    backgrounds) with a disjoint class list and other colour and background
    statistics, so what transfers is generic objectness and localisation, not
    the target's classes. Not a benchmark of real-world detection.

Limitations
    Geometric shapes on synthetic textures; far simpler than photographs. Some
    shapes are related to target shapes (ellipse/circle, plus/cross), which is
    intended, but means the source is not "far" from the target. Small
    hexagons and ellipses can look alike at 64x64.

License
    Same as the project that ships this file (generated data, no third-party
    content).

Versioning
    ``VERSION`` is bumped whenever the written content changes.
"""

from __future__ import annotations

import pathlib

import numpy as np

from .shapes import Recipe, Shape, _ngon, _plus, _star, write_yolo

NAME = "shapes-source"
VERSION = 1
CLASSES = ["ring", "diamond", "star", "ellipse", "hexagon", "plus"]


def _any_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


def _any_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 255, size=(n, 3)).astype(np.float32)


def _other(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    return rng.uniform(0, 255, size=3).astype(np.float32)


_CIRCLE = _ngon(96)
_DIAMOND = np.array([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)], dtype=float)
_STAR = _star(5, 0.45)
_HEXAGON = _ngon(6)
_PLUS = _plus(0.3)


def _ring(rng: np.random.Generator):
    return [(_CIRCLE, 255), (_CIRCLE * rng.uniform(0.45, 0.65), 0)]


def _ellipse(rng: np.random.Generator):
    return [(_ngon(96, ry=rng.uniform(0.45, 0.7)), 255)]


RECIPE = Recipe(
    name=NAME, version=VERSION, seed=20240614,
    classes={
        "ring": Shape(_ring),
        "diamond": Shape(lambda rng: [(_DIAMOND, 255)],
                         turn_p=0.5, turn_deg=30.0),
        "star": Shape(lambda rng: [(_STAR, 255)], turn_p=1.0, turn_deg=36.0),
        "ellipse": Shape(_ellipse, turn_p=1.0, turn_deg=90.0),
        "hexagon": Shape(lambda rng: [(_HEXAGON, 255)], turn_p=1.0, turn_deg=30.0),
        "plus": Shape(lambda rng: [(_PLUS, 255)], turn_p=0.35, turn_deg=15.0),
    },
    splits={"train": 2000, "val": 200},
    objects=(1, 4),
    size=(10.0, 34.0),
    backgrounds={"plain": 0.15, "gradient": 0.15, "colour-noise": 0.35, "stripes": 0.2, "checker": 0.15},
    background_colour=_any_colour,
    second_colour=_other,
    object_colour=_any_colours,
    shading=0.35,
    noise=(2.0, 10.0),
    distractors=0.7,
    min_contrast=90.0,
)
assert list(RECIPE.classes) == CLASSES


def write(folder: pathlib.Path) -> None:
    """Write the dataset in the Ultralytics YOLO layout: images/{train,val}/, labels/{train,val}/, data.yaml."""
    write_yolo(folder, RECIPE)
