"""The chance level of a benchmark's metric, for the learning-curve plots: 1 / classes for accuracy on a built-in
dataset (balanced test splits, so a constant or random guess scores that); None where it is not known from the
records (user data: the records do not carry the label set), and then no line is drawn."""
from __future__ import annotations

import importlib
from typing import Optional

from transferbench.builtin import BUILTINS


def chance_level(dataset, metric_name) -> Optional[float]:
    name = str(dataset).removeprefix("builtin:")
    if metric_name != "accuracy" or not str(dataset).startswith("builtin:") or name not in BUILTINS:
        return None
    classes = getattr(importlib.import_module(f"transferbench.builtin.{BUILTINS[name]}"), "CLASSES", None)
    return 1.0 / len(classes) if classes else None
