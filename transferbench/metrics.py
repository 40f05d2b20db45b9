"""Metric modules that ship with transferbench, loaded through `evaluate` from their local paths
(evaluate.load("accuracy") would need the Hub)."""
from __future__ import annotations

import functools
from pathlib import Path

from .errors import UserError, did_you_mean

METRICS_DIR = Path(__file__).with_name("metric_modules")


def available() -> list[str]:
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


@functools.lru_cache(maxsize=None)
def load(name: str):
    import evaluate

    if name not in available():
        raise UserError(f"unknown metric '{name}'{did_you_mean(name, available())}")
    return evaluate.load(str(METRICS_DIR / name))
