"""A cell's learning-rate search, done once and reused by the cell's other seeds (`lr_search.per: cell`).

The search is a function of the run whose search it is (`LrSearchPlan.by`, the cell's first seed): whichever of the
cell's runs comes first performs it with that seed's data and initialisation, so the choice is the same whatever
order the runs train in (one after another, or several at a time on Ray). Choices are kept in this process and,
for a suite, as JSON in `<results>/lr_search/<by>.json`, written atomically under a file lock so a second run of
the cell waits for the first's search instead of repeating it. Under a multi-process launch the main process
decides and every process follows (they train the candidates together).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable, Optional

_DONE: dict[str, dict] = {}  # by -> (the chosen rate, the search's record), in this process


def _path(folder: Path, by: str) -> Path:
    return folder / f"{by}.json"


def _read(folder: Optional[Path], by: str) -> Optional[dict]:
    if by in _DONE:
        return _DONE[by]
    if folder is None:
        return None
    try:
        found = json.loads(_path(folder, by).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or unreadable: searched again (and rewritten)
        return None
    _DONE[by] = found
    return found


def _write(folder: Optional[Path], by: str, found: dict) -> None:
    _DONE[by] = found
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{by}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(found), encoding="utf-8")
    os.replace(tmp, _path(folder, by))


def _broadcast(accelerator, value):
    if accelerator is None or accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def chosen(by: str, folder: Optional[Path], search: Callable[[], tuple[float, dict]],
           accelerator=None) -> tuple[float, dict, bool]:
    """(the rate, the record's lr_search, whether this call searched): the cell's recorded choice, or `search()`'s,
    recorded for the cell's other runs. A reused record names the run whose search it was (`by`) and keeps that
    search's seconds (spent by that run, not this one)."""
    main = accelerator is None or accelerator.is_main_process
    lock = contextlib.nullcontext()
    if folder is not None and main:
        from filelock import FileLock

        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{by}.lock"))
    with lock:
        found = _broadcast(accelerator, _read(folder, by) if main else None)
        searched = found is None
        if searched:
            lr, record = search()
            found = {"lr": lr, "record": {**record, "by": by}}
            if main:
                _write(folder, by, found)
            else:
                _DONE[by] = found
    record = dict(found["record"])
    record["reused"] = not searched
    return found["lr"], record, searched
