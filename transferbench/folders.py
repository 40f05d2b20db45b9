"""What a folder the user names for output (--results-dir, --out, --publish) must be, checked before anything is
computed: a name every writer can encode (reports print paths into UTF-8 text), a folder or a place where one can be
created (no file in the way at it or above it), not a dangling symlink."""
from __future__ import annotations

import errno
from pathlib import Path

from .errors import UserError


def check_name(flag: str, path: str | Path) -> Path:
    """`path`, refused when its name is not valid UTF-8 (the leaderboard, the card and the logs print it)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{flag} {str(path).encode('utf-8', 'backslashreplace').decode()}: the name is not valid "
                        f"UTF-8 (reports write it into UTF-8 text); give a folder whose name is") from None
    return Path(path)


def check_output_folder(flag: str, path: str | Path) -> Path:
    """`path` as a Path, or a one-line UserError saying what is wrong with it and what to give instead."""
    path = check_name(flag, path)
    try:
        if path.is_symlink() and not path.exists():
            raise UserError(f"{flag} {path} is a symlink to a folder that does not exist; remove it or create "
                            f"its target")
        above = path
        while not above.exists() and above != above.parent:
            above = above.parent
        if above.exists() and not above.is_dir():
            where = "is a file" if above == path else f"cannot be created: {above} is a file"
            raise UserError(f"{flag} {path} {where}; give a folder")
    except OSError as err:  # a name longer than the filesystem allows, a loop of symlinks...
        what = "the filesystem cannot hold this name" if err.errno == errno.ENAMETOOLONG else err.strerror
        raise UserError(f"{flag} {str(path)[:100]}...: {what}; give another folder") from None
    return path


def not_written(err: OSError, what: str = "the report", fix: str = ", or give --out another folder") -> UserError:
    """An output that could not be written (read-only, disk full, over a file-size limit) as one line."""
    where = f"{err.filename}: " if err.filename else ""
    return UserError(f"writing {what} failed: {where}{err.strerror or err}; make room or fix the permissions{fix}")
