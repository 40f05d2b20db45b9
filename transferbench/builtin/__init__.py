"""Built-in offline datasets (`builtin:NAME`): generated or shipped data, written once to a cache in a
standard format (csv splits for text) so they travel through the same loaders as user data."""
from __future__ import annotations

import csv
import importlib
from pathlib import Path

from ..cache import atomic_dir, cache_dir
from ..errors import UserError, did_you_mean

# name -> module in this package providing NAME, VERSION, a docstring (the dataset card), and either
# write(folder) (it writes a standard format itself, e.g. an imagefolder) or generate() -> {split: rows} (csv)
BUILTINS = {"topics": "topics", "digits": "digits", "glyphs": "glyphs", "shapes": "shapes",
            "shapes-source": "shapes_source"}


def describe() -> dict[str, str]:
    """name -> first line of its dataset card."""
    return {name: (importlib.import_module(f".{mod}", __name__).__doc__ or "").strip().splitlines()[0]
            for name, mod in BUILTINS.items()}


def materialize(name: str) -> Path:
    """Write builtin NAME (once per version) and return its folder (split files or an imagefolder, README.md)."""
    if name not in BUILTINS:
        raise UserError(f"unknown built-in dataset 'builtin:{name}'{did_you_mean(name, BUILTINS)}")
    module = importlib.import_module(f".{BUILTINS[name]}", __name__)
    target = cache_dir() / "builtin" / f"{name}-v{module.VERSION}"
    if (target / "README.md").exists():
        return target
    with atomic_dir(target) as tmp:
        if hasattr(module, "write"):
            module.write(tmp)
        else:
            for split, rows in module.generate().items():
                with open(tmp / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
        (tmp / "README.md").write_text(f"# builtin:{name} (v{module.VERSION})\n\n{module.__doc__.strip()}\n")
    return target
