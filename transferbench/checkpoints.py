"""Is a checkpoint on disk whole? Cheap checks that catch truncated or corrupt files before anything trains: every
safetensors file's header and tensor shapes parse and its data fits the file; a torch zip checkpoint's central
directory reads; every JSON file (config, label map, stage record) parses."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _file_problem(path: Path) -> Optional[str]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            # "numpy": the header, shapes and data extent are checked in Rust alike, and a dry run imports no torch
            with safe_open(str(path), framework="numpy") as f:
                for key in f.keys():
                    f.get_slice(key).get_shape()
        elif path.suffix in (".bin", ".pt", ".pth"):
            if path.stat().st_size == 0:
                return "empty file"
            with open(path, "rb") as f:
                head = f.read(2)
            if head == b"PK":  # torch's zip format: its central directory sits at the end (gone when truncated)
                if not zipfile.is_zipfile(path):
                    return "truncated or corrupt zip archive"
                zipfile.ZipFile(path).infolist()
            elif head[:1] != b"\x80":  # a legacy torch file is a pickle (protocol 2+)
                return "neither a torch zip archive nor a pickle"
        elif path.suffix == ".json" and path.stat().st_size < 64 * 2**20:
            json.loads(path.read_text(encoding="utf-8"))
    except Exception as err:  # noqa: BLE001 - any failure to read means "corrupt"
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'unreadable'}"[:200]
    return None


def problem(path: str | Path) -> Optional[str]:
    """'FILE: why' for the first corrupt file of a checkpoint (a folder or one file), else None."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if f.suffix in WEIGHT_SUFFIXES or f.suffix == ".json":
            why = _file_problem(f)
            if why:
                return f"{f}: {why}"
    return None
