"""A suite's validation error as one actionable line: where (the key path, or the --set item), what, and a guess
at the key that was meant."""
from __future__ import annotations

import re
from typing import Optional, Union

from pydantic import BaseModel, ValidationError

from .errors import did_you_mean
from .overrides import KEY_ALIASES, KEY_HINTS

# Names that become folders (the suite's results/<name>, a stage's cache folder): no separators, no "..".
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def one_line(err: ValidationError, where: str, root: type[BaseModel]) -> str:
    """The first error of validating `root` (the suite schema), as one line prefixed with `where`."""
    errors = err.errors()
    # a typo makes two errors, an unknown key and a missing one; the unknown key is the one to name
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = ""
    for part in e["loc"]:
        if part == "[key]":  # pydantic's marker for a mapping's key (a stage name)
            continue
        if isinstance(part, int) or not re.fullmatch(r"[\w-]+", part):
            loc += f"[{part!r}]"
        else:
            loc += f".{part}" if loc else part
    if e["type"] == "string_pattern_mismatch" and e["ctx"]["pattern"] == SAFE_NAME:
        return (f"{where}: {loc}: {e['input']!r} is not a plain name (it becomes a folder name: letters, digits "
                f"and _ . - only, starting with a letter or digit)")
    if e["type"] == "extra_forbidden":
        key = e["loc"][-1]
        parent = _model_at(root, e["loc"][:-1])
        if key in KEY_HINTS and parent and "lr" in parent.model_fields:
            hint = f" ({KEY_HINTS[key]})"
        elif parent:
            known = set(parent.model_fields) | ({*KEY_ALIASES} if "lr" in parent.model_fields else set())
            hint = did_you_mean(key, known)
        else:
            hint = ""
        return f"{where}: unknown key '{loc}'{hint}"
    if e["type"] == "alias_twice":
        return f"{where}: {loc}: {e['msg']}"
    if e["type"] == "missing":
        return f"{where}: missing required key '{loc}'"
    return f"{where}: {loc}: {e['msg']} (got {e.get('input')!r})"


def _model_at(model, loc) -> Optional[type[BaseModel]]:
    """The pydantic model that sits at `loc` inside `model`, to list its valid keys."""
    parts = [p for p in loc if not isinstance(p, int)]
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return None
        ann = field.annotation
        if getattr(ann, "__origin__", None) is Union:  # Optional[X]
            ann = next(a for a in ann.__args__ if a is not type(None))
        origin, args = getattr(ann, "__origin__", None), getattr(ann, "__args__", ())
        if origin is dict:  # a mapping of names (stages, modes): the next part is a key
            if parts:
                parts.pop(0)
            ann = args[1]
            if getattr(ann, "__origin__", None) is Union:
                ann = next(a for a in ann.__args__ if a is not type(None))
        elif origin is list:
            ann = args[0]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model
