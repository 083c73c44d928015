"""The sweep after a killed worker: each worker process writes into a temporary folder of its own, and the
next to start deletes the folders of workers that are gone. Their render processes died with them
(`bot.render.lifeline`), so only files are left to sweep."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def own_temp_folder(base: str | Path | None = None) -> Path:
    """One temporary folder per worker process, after sweeping those of workers that are gone.

    A worker killed outright leaves its folder behind (its render processes were killed with it); the sweep
    deletes the folders of workers that are gone. Everything the worker writes through `tempfile` goes into
    its own folder from then on.
    """
    base = Path(base or tempfile.gettempdir())
    for old in base.glob("etude-worker-*"):
        pid = old.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        log.info("deleting the temporary folder of worker %s, which is gone", pid)
        shutil.rmtree(old, ignore_errors=True)
    mine = base / f"etude-worker-{os.getpid()}"
    mine.mkdir(exist_ok=True)
    tempfile.tempdir = str(mine)
    return mine


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not yet reaped
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
