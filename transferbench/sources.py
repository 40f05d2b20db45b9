"""Dataset sources -> a `datasets.DatasetDict` with exactly the splits "train" and "eval",
and the nested training subsets that budgets draw from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import builtin
from .config import DatasetSpec
from .errors import UserError

FILE_LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EVAL_FALLBACKS = ("test", "validation", "valid", "val")
HELD_OUT = 0.2  # share of a single-split dataset held out for evaluation (fixed seed 0: same for every run)


def _local(path: Path) -> tuple[str, dict]:
    """(builder, kwargs) for load_dataset on a local file or folder."""
    if path.is_file():
        if path.suffix not in FILE_LOADERS:
            raise UserError(f"dataset file {path}: unsupported type '{path.suffix}' (use {', '.join(FILE_LOADERS)})")
        return FILE_LOADERS[path.suffix], {"data_files": {"train": str(path)},
                                           **({"delimiter": "\t"} if path.suffix == ".tsv" else {})}
    files = {}
    for f in sorted(path.iterdir()):
        if f.is_file() and f.suffix in FILE_LOADERS:
            files.setdefault(FILE_LOADERS[f.suffix], {})[f.stem] = str(f)
    if len(files) == 1:
        builder, data_files = next(iter(files.items()))
        return builder, {"data_files": data_files}
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*") if p.is_file()):
        return "imagefolder", {"data_dir": str(path)}
    raise UserError(f"dataset folder {path}: expected split files (train.csv, test.csv, ...) of one type, "
                    f"or an imagefolder (class sub-folders of images)")


def load(spec: DatasetSpec):
    """Load the spec's source through `datasets.load_dataset` and name its splits train / eval."""
    import datasets

    src = spec.source
    if src.startswith("builtin:"):
        builder, kwargs = _local(builtin.materialize(src.split(":", 1)[1]))
    elif src.startswith("hub:"):
        builder, kwargs = src[4:], ({"name": spec.config} if spec.config else {})
    else:
        path = Path(src).expanduser()
        if not path.exists():
            raise UserError(f"dataset '{src}' not found: give an existing file/folder, `hub:ID` or `builtin:NAME`")
        builder, kwargs = _local(path)
        for f in kwargs.get("data_files", {}).values():
            head = Path(f).read_bytes()[:65536] if Path(f).is_file() else b"x"
            if not head.strip():
                raise UserError(f"dataset file {f} is empty; give a file with a header and rows")
            if builder == "csv" and len(head) < 65536 and len([x for x in head.splitlines() if x.strip()]) < 2:
                raise UserError(f"dataset file {f} has a header but no rows; add examples")
    try:
        dd = datasets.load_dataset(builder, **kwargs)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; all mean "cannot load this"
        if src.startswith("hub:"):
            raise UserError(
                f"dataset '{src}' cannot be loaded from the Hub here (offline or unreachable: {type(err).__name__}); "
                f"download it once where the Hub is reachable, or save it as csv/json/imagefolder and give its "
                f"local path as `dataset: {{source: path/to/data}}`") from None
        raise UserError(f"dataset '{src}': {type(err).__name__}: {str(err).splitlines()[0]}") from None
    return _train_eval(dd, spec)


def _train_eval(dd, spec: DatasetSpec):
    import datasets

    empty = [name for name, split in dd.items() if split.num_rows == 0]
    if empty:
        raise UserError(f"dataset '{spec.source}': the {empty[0]} split has no rows (a header-only or empty file); "
                        f"add examples")

    if spec.train_split not in dd:
        raise UserError(f"dataset '{spec.source}' has no split '{spec.train_split}' (splits: {', '.join(dd)}); "
                        f"set dataset.train_split")
    if spec.eval_split is not None:
        if spec.eval_split not in dd:
            raise UserError(f"dataset '{spec.source}' has no split '{spec.eval_split}' (splits: {', '.join(dd)}); "
                            f"set dataset.eval_split")
        return datasets.DatasetDict(train=dd[spec.train_split], eval=dd[spec.eval_split])
    for name in EVAL_FALLBACKS:
        if name in dd and name != spec.train_split:
            return datasets.DatasetDict(train=dd[spec.train_split], eval=dd[name])
    n = dd[spec.train_split].num_rows
    if n < 2:
        raise UserError(f"dataset '{spec.source}': {n} row cannot be split into training and evaluation examples "
                        f"(it holds out {HELD_OUT:.0%}); add examples or give an eval split")
    parts = dd[spec.train_split].train_test_split(test_size=HELD_OUT, seed=0)
    return datasets.DatasetDict(train=parts["train"], eval=parts["test"])


def budget_size(n: int, train_samples: int | None, train_fraction: float | None) -> int:
    if train_samples is not None:
        if train_samples > n:
            raise UserError(f"train_samples {train_samples} exceeds the {n} training examples available")
        return train_samples
    return n if train_fraction is None else max(1, round(n * train_fraction))


VALIDATION_SEED = 12345  # one carve for every seed and budget: validation stays disjoint from every subset


def validation_split(n: int, size: int) -> tuple[list[int], list[int]]:
    """(validation indices, the training pool left): a fixed-seed carve taken before any budget is drawn."""
    if size >= n:
        raise UserError(f"early_stopping.validation_samples {size} leaves no training examples (the training "
                        f"split has {n}); choose fewer")
    order = np.random.default_rng(VALIDATION_SEED).permutation(n)
    return sorted(order[:size].tolist()), sorted(order[size:].tolist())


def subset_indices(n: int, seed: int, size: int) -> list[int]:
    """The first `size` of one seeded permutation: a smaller budget is a prefix (nested subsets),
    and every mode with this seed sees the same examples."""
    return np.random.default_rng(seed).permutation(n)[:size].tolist()
