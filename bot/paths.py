"""The one check of a file a user names (a seed, a melody, a model's files, a soundfont): a regular file
(never a FIFO, device or folder, which could block a read or mislead it), within a size cap, readable."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bot.errors import EtudeError


def shown(path: str | Path) -> str:
    """A path as an error message shows it: 80 characters at most, cut in the middle, so the file's own
    name (what the user typed last) stays whole."""
    text = str(path)
    if len(text) <= 80:
        return text
    name = Path(text).name[-60:]
    return text[: 77 - len(name) - 1] + ".../" + name


def size_text(n: int) -> str:
    """A byte count as a limit is read: `2 MiB`, `512 KiB`, else bytes."""
    if n % 2**20 == 0:
        return f"{n // 2**20} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def checked_file(path: str | Path, what: str, max_bytes: int, error: type[EtudeError]) -> Path:
    """`path` when it is a regular, readable file of at most `max_bytes`; else `error` saying which way it
    is not, with `what` naming it ("the seed", "the soundfont")."""
    path = Path(path)
    if not str(path):
        raise error(f"{what} is an empty path")
    try:
        st = path.stat()
    except OSError as e:
        raise error(f"{what} {shown(path)} cannot be read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {shown(path)} is not a regular file")
    if st.st_size > max_bytes:
        raise error(f"{what} {shown(path)} is larger than {size_text(max_bytes)}")
    try:  # a real open: permission bits do not tell what root may do, nor an unreadable mount
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        raise error(f"{what} {shown(path)} cannot be read: {e.strerror or e}") from None
    return path
