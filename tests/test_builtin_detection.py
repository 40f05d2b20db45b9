"""The generated object-detection built-ins (builtin:shapes, builtin:shapes-source): Ultralytics YOLO layout,
valid and tight boxes, deterministic bytes, and accepted by Ultralytics' own dataset check."""
import dataclasses
import hashlib
import importlib

import numpy as np
import pytest
from PIL import Image

from transferbench.builtin import BUILTINS, describe, materialize

SETS = {"shapes": {"train": 600, "val": 200}, "shapes-source": {"train": 2000, "val": 200}}


@pytest.fixture(scope="module")
def folders():
    return {name: materialize(name) for name in SETS}


def _module(name):
    return importlib.import_module(f"transferbench.builtin.{BUILTINS[name]}")


def _labels(path):
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        assert len(parts) == 5, (path, line)
        assert all(len(p.split(".")[1]) == 6 for p in parts[1:]), (path, line)  # 6 decimals
        rows.append((int(parts[0]), *(float(p) for p in parts[1:])))
    return rows


def _digest(folder, relpaths):
    return {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in relpaths}


def test_registered_with_cards():
    cards = describe()
    for name in SETS:
        assert "SYNTHETIC" in cards[name] and "YOLO" in cards[name]
        module = _module(name)
        assert module.NAME == name and isinstance(module.VERSION, int)


@pytest.mark.parametrize("name", list(SETS))
def test_layout_counts_and_labels(folders, name):
    folder, module = folders[name], _module(name)
    assert (folder / "README.md").read_text().startswith(f"# builtin:{name} (v{module.VERSION})")
    yaml_text = (folder / "data.yaml").read_text()
    assert "path:" not in yaml_text  # relative to the yaml's folder: materialize renames a temporary folder
    nc, size = len(module.CLASSES), 64
    per_class = np.zeros(nc, dtype=int)
    for split, count in SETS[name].items():
        images = sorted((folder / "images" / split).glob("*.png"))
        labels = sorted((folder / "labels" / split).glob("*.txt"))
        assert len(images) == count and len(labels) == count
        assert [p.stem for p in images] == [p.stem for p in labels]
        objects = 0
        for path in labels:
            rows = _labels(path)
            assert 1 <= len(rows) <= (3 if name == "shapes" else 4), path
            for class_id, cx, cy, w, h in rows:
                assert 0 <= class_id < nc
                assert 0 < cx < 1 and 0 < cy < 1 and 0 < w <= 1 and 0 < h <= 1
                assert w * size >= 3 and h * size >= 3, (path, w, h)  # non-degenerate
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6 and cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6
                per_class[class_id] += 1
            objects += len(rows)
        assert 1.5 * count < objects < 3.0 * count
    assert per_class.min() > 0.6 * per_class.mean()  # every class well represented
    with Image.open(images[0]) as image:
        assert image.size == (64, 64) and image.mode == "RGB"


def test_class_lists_differ():
    target, source = _module("shapes").CLASSES, _module("shapes-source").CLASSES
    assert len(target) == 4 and len(source) == 6 and not set(target) & set(source)


@pytest.mark.parametrize("name", list(SETS))
def test_deterministic(folders, name, tmp_path, monkeypatch):
    """Two fresh writes give the same bytes, and the same bytes as the cached full set: each split is one
    seeded random stream, so the first images do not depend on how many follow."""
    module = _module(name)
    monkeypatch.setattr(module, "RECIPE", dataclasses.replace(module.RECIPE, splits={"train": 4, "val": 2}))
    module.write(tmp_path / "a")
    module.write(tmp_path / "b")
    relpaths = ["data.yaml"] + [f"{kind}/{split}/{n:06d}.{ext}" for split, count in (("train", 4), ("val", 2))
                                for n in range(count) for kind, ext in (("images", "png"), ("labels", "txt"))]
    first = _digest(tmp_path / "a", relpaths)
    assert first == _digest(tmp_path / "b", relpaths) == _digest(folders[name], relpaths)
    assert len(set(first.values())) == len(relpaths)  # pictures differ from one another


def test_boxes_fit_the_drawn_pixels(folders):
    """On single-object pictures with a plain background, the pixels that differ clearly from the background are
    inside the box, and they reach every side of it (a tight box)."""
    folder = folders["shapes"]
    checked = 0
    for label in sorted((folder / "labels" / "train").glob("*.txt")):
        rows = _labels(label)
        if len(rows) != 1:
            continue
        _, cx, cy, w, h = rows[0]
        x0, x1 = round((cx - w / 2) * 64), round((cx + w / 2) * 64)
        y0, y1 = round((cy - h / 2) * 64), round((cy + h / 2) * 64)
        with Image.open(folder / "images" / "train" / f"{label.stem}.png") as image:
            pixels = np.asarray(image, dtype=np.float32)
        inside = np.zeros((64, 64), dtype=bool)
        inside[y0:y1, x0:x1] = True
        near = np.zeros((64, 64), dtype=bool)
        near[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True  # the box and its 1-pixel ring
        outside = pixels[~near]
        if outside.shape[0] < 500 or outside.std(axis=0).max() > 8:  # not a plain background
            continue
        distance = np.linalg.norm(pixels - np.median(outside, axis=0), axis=2)
        shape = distance > 35
        assert not (shape & ~near).any(), label  # nothing drawn outside the box
        assert shape[inside].mean() > 0.35, label  # the box is mostly object
        box = shape[y0:y1, x0:x1]
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any(), label  # tight
        checked += 1
        if checked == 10:
            break
    assert checked == 10


@pytest.mark.parametrize("name", list(SETS))
def test_ultralytics_accepts_it(folders, name, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")  # before the import: ultralytics probes the network otherwise
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    from ultralytics.data.utils import check_det_dataset

    folder = folders[name]
    data = check_det_dataset(str(folder / "data.yaml"))
    classes = _module(name).CLASSES
    assert data["nc"] == len(classes)
    assert data["names"] == dict(enumerate(classes))
    assert data["train"] == str((folder / "images" / "train").resolve())
    assert data["val"] == str((folder / "images" / "val").resolve())
