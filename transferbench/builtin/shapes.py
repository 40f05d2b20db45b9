"""builtin:shapes: SYNTHETIC object detection (YOLO format), 4 filled shapes on varied backgrounds, 64x64, 600 train / 200 val.

Dataset card (built-in, synthetic, offline).

What it is
    A SYNTHETIC object-detection dataset of simple filled shapes. Every image
    is drawn on the fly with numpy and Pillow from a fixed seed; nothing is
    downloaded and no real-world images are included. Each image holds 1 to 3
    labelled objects, each with a tight axis-aligned bounding box.

Classes (4)
    ``0: circle``, ``1: square``, ``2: triangle``, ``3: cross`` (an upright X:
    two bars crossing at right angles, turned 45 degrees). The classes are
    about equally frequent (each object's class is drawn uniformly).

Splits
    ``train``: 600 images; ``val``: 200 images (about 2 objects per image).
    Both splits are drawn independently from the same distribution, from two
    separate random streams of one fixed seed, so ``write`` is deterministic:
    the same bytes on every run.

How an image is made
    Images are 64x64 RGB. The background is one of: a plain colour (30%), a
    linear gradient between two colours in a random direction (30%), a smooth
    random-noise texture (20%), or stripes / a checkerboard of period 4-12
    pixels (20%); background colours are muted (low saturation) and the two
    colours of a background differ only moderately. Then 1, 2 or 3 objects
    (equally likely) are drawn on top, one after another. An object has a
    random class, a size of 12-36 pixels (the width of the unturned shape), a
    random position (up to 20% of it may leave the picture), and a random
    saturated colour that differs clearly from what lies under it; squares,
    triangles and crosses are turned by a random angle in about a third of
    cases. Each shape is filled at 4x resolution and reduced by area averaging,
    which gives anti-aliased edges and the exact pixel coverage of the shape.
    A later object may partly hide an earlier one, but every object keeps at
    least 60% of its area visible (in the picture and not hidden); placements
    breaking this are redrawn. Finally gaussian noise with a random standard
    deviation of 1-6 levels is added before rounding to 8-bit.

Boxes
    The box of an object is the tight bounding box of the pixels where at least
    half of the pixel shows that object (after occlusion and clipping to the
    picture), so it is within a pixel of the visible shape's extent. Boxes are
    at least 4 pixels wide and high.

Layout
    The standard Ultralytics YOLO layout: ``images/train/NNNNNN.png``,
    ``labels/train/NNNNNN.txt`` (same for ``val``), one line per object
    ``class_id cx cy w h`` normalised to 0-1 with 6 decimals, and ``data.yaml``
    with ``train: images/train``, ``val: images/val``, ``nc`` and ``names``.
    ``data.yaml`` has no ``path`` key: Ultralytics then resolves the split
    folders relative to the yaml file's own folder, so the folder can be moved.

Intended use
    The small target task of the object-detection benchmarks: detection with
    little training data, to compare fine-tuning a detector pretrained on
    ``builtin:shapes-source`` (different classes, same picture size) against
    training from scratch. Not a benchmark of real-world detection.

Limitations
    Flat-coloured geometric shapes on synthetic backgrounds: far simpler than
    photographs (no perspective, lighting, texture on objects, or clutter).
    Small or heavily turned squares and triangles can look alike after
    anti-aliasing at 64x64, and a turned cross can resemble an upright plus.

License
    Same as the project that ships this file (generated data, no third-party
    content).

Versioning
    ``VERSION`` is bumped whenever the written content changes.
"""

from __future__ import annotations

import math
import pathlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

NAME = "shapes"
VERSION = 1
CLASSES = ["circle", "square", "triangle", "cross"]

_SIZE = 64  # final picture size in pixels
_SCALE = 4  # shapes are filled at _SCALE times the final resolution, then reduced by area averaging

# ---------------------------------------------------------------------------------------------------------
# Shared machinery (also used by builtin:shapes-source): unit shapes, backgrounds, compositing, YOLO writer.
# A unit shape is a list of (polygon, fill) pieces in units where the unturned shape spans about -1..1;
# fill 255 adds area, fill 0 cuts a hole (drawn in order).

Pieces = list[tuple[np.ndarray, int]]


def _ngon(n: int, radius: float = 1.0, start_deg: float = -90.0, rx: float = 1.0, ry: float = 1.0) -> np.ndarray:
    angles = np.radians(start_deg + 360.0 * np.arange(n) / n)
    return np.stack([rx * radius * np.cos(angles), ry * radius * np.sin(angles)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    angles = np.radians(-90.0 + 180.0 * np.arange(2 * points) / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _plus(half_width: float) -> np.ndarray:
    t = half_width
    return np.array([(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t),
                     (-1, -t), (-t, -t)], dtype=float)


@dataclass(frozen=True)
class Shape:
    """How to draw one class: make(rng) -> unit pieces; turned by base_deg, plus with probability turn_p a
    uniform angle in +-turn_deg."""
    make: Callable[[np.random.Generator], Pieces]
    base_deg: float = 0.0
    turn_p: float = 0.0
    turn_deg: float = 0.0


@dataclass(frozen=True)
class Recipe:
    """Everything that tells one generated detection dataset from another."""
    name: str
    version: int
    seed: int
    classes: dict[str, Shape]
    splits: dict[str, int]  # split -> number of images
    objects: tuple[int, int]  # min, max objects per image (inclusive, uniform)
    size: tuple[float, float]  # unturned shape width in pixels
    backgrounds: dict[str, float]  # background kind -> probability
    background_colour: Callable[[np.random.Generator], np.ndarray]
    second_colour: Callable[[np.random.Generator, np.ndarray], np.ndarray]  # the other colour of a 2-colour bg
    object_colour: Callable[[np.random.Generator, int], np.ndarray]  # (rng, n) -> n colours, shape (n, 3)
    shading: float = 0.0  # max brightness change of an object across its width (0 = flat fill)
    noise: tuple[float, float] = (1.0, 6.0)  # gaussian noise standard deviation range
    distractors: float = 0.0  # probability of unlabelled thin lines / dots on the background
    min_visible: float = 0.6
    min_contrast: float = 100.0  # 20th percentile of the RGB distance between an object and what lies under it
    outside: float = 0.2  # fraction of the shape size that may leave the picture per side


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all 0..1, shape (n,)) -> RGB (0..255), shape (n, 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    rgb = v[:, None] * (1.0 - s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return (rgb * 255.0).astype(np.float32)


_Y, _X = np.mgrid[0:_SIZE, 0:_SIZE].astype(np.float32) + 0.5  # pixel centres


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    return c1[None, None, :] + (c2 - c1)[None, None, :] * t[:, :, None]


@lru_cache(maxsize=None)
def _upsampler(cells: int) -> np.ndarray:
    """(_SIZE, cells) matrix A with A @ grid @ A.T == Pillow's bicubic resize of a cells x cells grid."""
    columns = [np.asarray(Image.fromarray(np.eye(1, cells, j, dtype=np.float32)).resize(
        (_SIZE, 1), Image.Resampling.BICUBIC))[0] for j in range(cells)]
    return np.stack(columns, axis=1)


def _value_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth noise in 0..1 of shape (_SIZE, _SIZE): a random cells x cells grid upsampled bicubically."""
    up = _upsampler(cells)
    big = up @ rng.random((cells, cells)).astype(np.float32) @ up.T
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / max(hi - lo, 1e-6)


def _background(recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    kinds = list(recipe.backgrounds)
    weights = np.array(list(recipe.backgrounds.values()))
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    c1 = recipe.background_colour(rng)
    c2 = recipe.second_colour(rng, c1)
    x, y = _X, _Y
    if kind == "plain":
        return np.broadcast_to(c1, (_SIZE, _SIZE, 3)).astype(np.float32)
    if kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        t = x * math.cos(a) + y * math.sin(a)
        t = (t - t.min()) / (t.max() - t.min())
        return _mix(c1, c2, t)
    if kind == "noise":
        t = _value_noise(rng, int(rng.integers(3, 9)))
        return _mix(c1, c2, t)
    if kind == "colour-noise":  # independent smooth noise per channel, plus a finer octave
        cells = int(rng.integers(3, 9))
        channels = [0.65 * _value_noise(rng, cells) + 0.35 * _value_noise(rng, 2 * cells) for _ in range(3)]
        lo, hi = np.minimum(c1, c2), np.maximum(c1, c2)
        return np.stack([lo[i] + (hi[i] - lo[i]) * channels[i] for i in range(3)], axis=2)
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 12)
        t = ((x * math.cos(a) + y * math.sin(a)) / period + rng.random()) % 1.0
        t = (t < 0.5).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * np.sin(2 * math.pi * t)
        return _mix(c1, c2, t)
    if kind == "checker":
        period = int(rng.integers(4, 13))
        ox, oy = rng.integers(0, period, size=2)
        t = (((x.astype(np.int32) + ox) // period + (y.astype(np.int32) + oy) // period) % 2).astype(np.float32)
        return _mix(c1, c2, t)
    raise ValueError(kind)


def _coverage(polygons: Pieces) -> tuple[np.ndarray, float]:
    """Fill pixel-coordinate polygons at _SCALE x and reduce: (coverage 0..1 over the picture, whole area in
    pixels including any part outside the picture)."""
    points = np.concatenate([p for p, _ in polygons])
    x0, y0 = (int(v) - 1 for v in np.floor(points.min(axis=0)))
    x1, y1 = (int(v) + 1 for v in np.ceil(points.max(axis=0)))
    w, h = x1 - x0, y1 - y0
    canvas = Image.new("L", (w * _SCALE, h * _SCALE), 0)
    draw = ImageDraw.Draw(canvas)
    for poly, fill in polygons:
        draw.polygon(((poly - (x0, y0)) * _SCALE).ravel().tolist(), fill=fill)
    patch = np.asarray(canvas.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255.0
    full = np.zeros((_SIZE, _SIZE), dtype=np.float32)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, _SIZE), min(y1, _SIZE)
    if sx1 > sx0 and sy1 > sy0:
        full[sy0:sy1, sx0:sx1] = patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
    return full, float(patch.sum())


def _place(recipe: Recipe, shape: Shape, rng: np.random.Generator) -> tuple[Pieces, float, float, float]:
    """A shape at a random size, angle and position: (pixel-coordinate pieces, centre x, centre y, size)."""
    size = rng.uniform(*recipe.size)
    angle = shape.base_deg + (rng.uniform(-shape.turn_deg, shape.turn_deg) if rng.random() < shape.turn_p else 0.0)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pieces = [((poly @ rot.T) * (size / 2.0), fill) for poly, fill in shape.make(rng)]
    points = np.concatenate([p for p, _ in pieces])
    lo, hi = points.min(axis=0), points.max(axis=0)
    margin = recipe.outside * size
    cx = rng.uniform(-lo[0] - margin, _SIZE - hi[0] + margin)
    cy = rng.uniform(-lo[1] - margin, _SIZE - hi[1] + margin)
    return [(p + (cx, cy), fill) for p, fill in pieces], cx, cy, size


_CANDIDATES = 12  # object colours drawn per object; the first that stands out is used


def _object_paint(recipe: Recipe, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                  cx: float, cy: float, size: float) -> np.ndarray | None:
    """The object's colour, (3,) or per pixel (H, W, 3), chosen to stand out from what lies under it: the 20th
    percentile of the RGB distance to the pixels under the shape must reach recipe.min_contrast (so a colour
    that matches one colour of a stripe or checker pattern is refused); None if no candidate comes close."""
    under = image[mask >= 0.5]
    candidates = recipe.object_colour(rng, _CANDIDATES)
    distance = np.linalg.norm(under[None, :, :] - candidates[:, None, :], axis=2)
    k = distance.shape[1] // 5
    score = np.partition(distance, k, axis=1)[:, k]
    good = np.flatnonzero(score >= recipe.min_contrast)
    pick = int(good[0]) if good.size else int(np.argmax(score))
    if score[pick] < 0.7 * recipe.min_contrast:
        return None
    paint = candidates[pick]
    if recipe.shading > 0:  # a linear light falloff across the object in a random direction
        a = rng.uniform(0, 2 * math.pi)
        t = np.clip(((_X - cx) * math.cos(a) + (_Y - cy) * math.sin(a)) / size, -0.5, 0.5) * 2
        gain = 1.0 + rng.uniform(0.3, 1.0) * recipe.shading * t
        paint = np.clip(paint[None, None, :] * gain[:, :, None], 0, 255)
    return paint


def _distractors(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Unlabelled clutter on the background: 2-8 thin lines and small dots in random colours."""
    scale = 2  # enough for thin clutter, and a quarter of the work of _SCALE
    big = _SIZE * scale
    colour, cover = Image.new("RGB", (big, big), 0), Image.new("L", (big, big), 0)
    draw_colour, draw_cover = ImageDraw.Draw(colour), ImageDraw.Draw(cover)
    for _ in range(int(rng.integers(2, 9))):
        if rng.random() < 0.6:
            length, width = rng.uniform(6, 28), rng.uniform(0.7, 1.5)
            a = rng.uniform(0, math.pi)
            d = np.array([math.cos(a), math.sin(a)]) * length / 2
            n = np.array([-math.sin(a), math.cos(a)]) * width / 2
            poly = np.array([-d - n, d - n, d + n, -d + n])
        else:
            poly = _ngon(12, rng.uniform(0.8, 2.0))
        points = ((poly + rng.uniform(0, _SIZE, size=2)) * scale).ravel().tolist()
        draw_colour.polygon(points, fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
        draw_cover.polygon(points, fill=255)
    mask = np.asarray(cover.resize((_SIZE, _SIZE), Image.Resampling.BOX), dtype=np.float32)[:, :, None] / 255.0
    # on black, the reduced colour canvas is colour x coverage already (exact where distractors do not cross)
    return image * (1 - mask) + np.asarray(colour.resize((_SIZE, _SIZE), Image.Resampling.BOX), dtype=np.float32)


Box = tuple[int, int, int, int]


def _box(visible: np.ndarray) -> Box | None:
    """Tight pixel box (x0, y0, x1, y1), exclusive ends, of the pixels at least half covered."""
    on = visible >= 0.5
    cols, rows = np.flatnonzero(on.any(axis=0)), np.flatnonzero(on.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _too_small(box: Box | None) -> bool:
    return box is None or box[2] - box[0] < 4 or box[3] - box[1] < 4


def render(recipe: Recipe, rng: np.random.Generator) -> tuple[Image.Image, list[tuple[int, Box]]]:
    """One picture and its objects [(class id, (x0, y0, x1, y1) in pixels, exclusive ends)]."""
    names = list(recipe.classes)
    image = _background(recipe, rng)
    if recipe.distractors and rng.random() < recipe.distractors:
        image = _distractors(rng, image)
    wanted = int(rng.integers(recipe.objects[0], recipe.objects[1] + 1))
    visible: list[np.ndarray] = []  # per object: coverage still showing
    areas: list[float] = []  # per object: whole area, in and outside the picture
    ids: list[int] = []
    boxes: list[Box] = []
    for _ in range(wanted):
        for _attempt in range(30):
            class_id = int(rng.integers(len(names)))
            pieces, cx, cy, size = _place(recipe, recipe.classes[names[class_id]], rng)
            mask, area = _coverage(pieces)
            if mask.sum() < recipe.min_visible * area:
                continue
            hidden = [v * (1 - mask) for v in visible]
            if any(h.sum() < recipe.min_visible * a for h, a in zip(hidden, areas)):
                continue
            new_boxes = [_box(v) for v in [*hidden, mask]]
            if any(_too_small(b) for b in new_boxes):
                continue
            paint = _object_paint(recipe, rng, image, mask, cx, cy, size)
            if paint is None:
                continue
            image = image + mask[:, :, None] * (paint - image)
            visible, areas, ids, boxes = [*hidden, mask], [*areas, area], [*ids, class_id], new_boxes
            break
    image = image + rng.uniform(*recipe.noise) * rng.standard_normal(image.shape, dtype=np.float32)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), list(zip(ids, boxes))


def _save(picture: Image.Image, image_path: pathlib.Path, label_path: pathlib.Path, labels: str) -> None:
    picture.save(image_path, format="PNG")
    label_path.write_text(labels)


def write_yolo(folder: pathlib.Path, recipe: Recipe) -> None:
    """Write the recipe's splits in the Ultralytics YOLO layout (images/<split>, labels/<split>, data.yaml).
    Each split is one seeded random stream, so its first images do not depend on the split size. PNG encoding
    and file writes (which release the GIL) overlap with drawing the next pictures in one helper thread."""
    folder = pathlib.Path(folder)
    streams = np.random.SeedSequence(recipe.seed).spawn(len(recipe.splits))
    with ThreadPoolExecutor(max_workers=1) as saver:
        pending: deque = deque()
        for (split, count), stream in zip(recipe.splits.items(), streams):
            rng = np.random.default_rng(stream)
            (folder / "images" / split).mkdir(parents=True, exist_ok=True)
            (folder / "labels" / split).mkdir(parents=True, exist_ok=True)
            for n in range(count):
                picture, objects = render(recipe, rng)
                labels = "".join(f"{c} {(x0 + x1) / 2 / _SIZE:.6f} {(y0 + y1) / 2 / _SIZE:.6f} "
                                 f"{(x1 - x0) / _SIZE:.6f} {(y1 - y0) / _SIZE:.6f}\n"
                                 for c, (x0, y0, x1, y1) in objects)
                pending.append(saver.submit(_save, picture, folder / "images" / split / f"{n:06d}.png",
                                            folder / "labels" / split / f"{n:06d}.txt", labels))
                while len(pending) > 64 or (pending and pending[0].done()):
                    pending.popleft().result()  # re-raises a failed write
        while pending:
            pending.popleft().result()
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(recipe.classes))
    splits = "".join(f"{split}: images/{split}\n" for split in recipe.splits)
    (folder / "data.yaml").write_text(
        f"# builtin:{recipe.name} v{recipe.version}: Ultralytics YOLO detection data. No 'path' key on purpose:\n"
        f"# the split folders are relative to this file's folder.\n{splits}nc: {len(recipe.classes)}\nnames:\n{names}")


# ---------------------------------------------------------------------------------------------------------
# builtin:shapes


def _muted(rng: np.random.Generator) -> np.ndarray:
    return _hsv(*rng.uniform((0.0, 0.0, 0.12), (1.0, 0.45, 0.95), size=(1, 3)).T)[0]


def _near(rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    return np.clip(colour + rng.normal(0.0, 35.0, size=3), 0, 255).astype(np.float32)


def _saturated(rng: np.random.Generator, n: int) -> np.ndarray:
    return _hsv(*rng.uniform((0.0, 0.45, 0.3), (1.0, 1.0, 1.0), size=(n, 3)).T)


_CIRCLE = _ngon(96)
_SQUARE = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
_TRIANGLE = np.array([(0, -0.866), (1, 0.866), (-1, 0.866)])
_CROSS = _plus(0.28) / 0.905  # spans about -1..1 once turned by 45 degrees

RECIPE = Recipe(
    name=NAME, version=VERSION, seed=20240613,
    classes={
        "circle": Shape(lambda rng: [(_CIRCLE, 255)]),
        "square": Shape(lambda rng: [(_SQUARE, 255)], turn_p=0.35, turn_deg=45.0),
        "triangle": Shape(lambda rng: [(_TRIANGLE, 255)], turn_p=0.35, turn_deg=60.0),
        "cross": Shape(lambda rng: [(_CROSS, 255)], base_deg=45.0, turn_p=0.35, turn_deg=20.0),
    },
    splits={"train": 600, "val": 200},
    objects=(1, 3),
    size=(12.0, 36.0),
    backgrounds={"plain": 0.3, "gradient": 0.3, "noise": 0.2, "stripes": 0.1, "checker": 0.1},
    background_colour=_muted,
    second_colour=_near,
    object_colour=_saturated,
    noise=(1.0, 6.0),
    min_contrast=100.0,
)
assert list(RECIPE.classes) == CLASSES


def write(folder: pathlib.Path) -> None:
    """Write the dataset in the Ultralytics YOLO layout: images/{train,val}/, labels/{train,val}/, data.yaml."""
    write_yolo(folder, RECIPE)
