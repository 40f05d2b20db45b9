"""The cache folder for generated data, converted weights, architecture configs and pretrain stages."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERBENCH_CACHE", Path.home() / ".cache" / "transferbench"))


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield an empty temporary folder beside `target`; on success it becomes `target` in one rename, so a
    reader never sees half a folder and concurrent writers race harmlessly (the first rename wins)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
