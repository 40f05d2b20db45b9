"""A module imported on first use, so commands that train nothing (`--help`, `list`, `run --dry-run`, `report`)
never pay for torch's import (~2 s). `torch = lazy("torch")` then `torch.nn.Module` imports torch there; the
real module lands in sys.modules only then."""
from __future__ import annotations

import importlib


class _Lazy:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def lazy(name: str) -> _Lazy:
    return _Lazy(name)
