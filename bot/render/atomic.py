"""Files written beside their destination and renamed into place, so a reader never sees half a file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temp_path(folder: Path, name: str, suffix: str) -> Iterator[Path]:
    """A fresh file path in `folder`, removed afterwards unless it was renamed into place.

    Only the name is reserved: the writer creates the file, so it gets the usual permissions (mkstemp's are
    owner-only), and the random part keeps concurrent renders of the same name apart.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{secrets.token_hex(6)}{suffix}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
