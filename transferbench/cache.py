"""The cache folder for generated data, converted weights, architecture configs and pretrain stages."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from . import claims


def cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERBENCH_CACHE", Path.home() / ".cache" / "transferbench"))


PARTIAL = ".partial-"  # in the name of a folder being written (atomic_dir), followed by its writer


def _writer_tag() -> str:
    """This process in a folder name: pid, start time (ms) and a hash of the host, so a sweep can tell a folder
    whose writer was killed from one still being written."""
    me = claims.owner()
    host = hashlib.sha256(me["host"].encode()).hexdigest()[:8]
    return f"{me['pid']}.{int((me['started'] or 0) * 1000)}.{host}"


def _writer(name: str) -> Optional[dict]:
    """The owner a temporary folder's name records, as claims.gone reads it; None when it records none."""
    m = re.search(re.escape(PARTIAL) + r"(\d+)\.(\d+)\.([0-9a-f]{8})-[^/]*$", name)
    if m is None or m.group(3) != hashlib.sha256(claims.HOST.encode()).hexdigest()[:8]:
        return None
    return {"host": claims.HOST, "pid": int(m.group(1)), "started": int(m.group(2)) / 1000 or None}


@contextlib.contextmanager
def atomic_dir(target: Path):
    """Yield an empty temporary folder beside `target`; on success it becomes `target` in one rename, so a
    reader never sees half a folder and concurrent writers race harmlessly (the first rename wins). The folders
    that writers killed meanwhile (kill -9, power loss) left beside it are removed first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep(target.parent)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{PARTIAL}{_writer_tag()}-"))
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep(folder: Path) -> None:
    """Remove the temporary folders in `folder` whose writer is gone (a process of this host that no longer
    runs); another host's, or a live writer's, are left alone."""
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(".") and PARTIAL in p.name]
    except OSError:
        return
    for p in entries:
        holder = _writer(p.name)
        if holder is not None and claims.gone(holder):
            shutil.rmtree(p, ignore_errors=True)
