"""Reading small files that something else provides (hardware counters, /proc, claim files) without ever blocking:
a FIFO or a device node at such a path would block a plain read() forever and hang the run that reads it."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

LIMIT = 4 * 2**20  # more than any counter, /proc file or claim holds


def read_text(path: str | Path, limit: int = LIMIT) -> str:
    """The text of a regular file (at most `limit` bytes; undecodable bytes replaced). Opened non-blocking, so
    opening a FIFO returns at once, and refused (OSError EINVAL) when it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks, size = [], 0
        while size < limit:
            chunk = os.read(fd, min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
