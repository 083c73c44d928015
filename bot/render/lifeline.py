"""Render processes that cannot outlive the process that started them, by construction.

The child asks the kernel for SIGKILL when its parent dies (`prctl(PR_SET_PDEATHSIG)`), so a worker killed
outright takes its render processes with it, mid-render or idle, and nobody has to search the process
table for them afterwards. The kernel sends that signal when the parent's *thread* that started the child
ends, not only the process, so every child is started from one thread that lives as long as the process
(`start_child`): the pool's replacements, started from short-lived threads, would otherwise die with them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL = 0.5  # seconds between checks of the parent where the kernel offers no death signal

_requests: queue.SimpleQueue[tuple[Callable[[], object], Future]] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _serve() -> None:
    while True:
        start, done = _requests.get()
        try:
            done.set_result(start())
        except BaseException as e:  # noqa: BLE001 - raised again in the thread that asked
            done.set_exception(e)


def start_child(start: Callable[[], T]) -> T:
    """Call `start` (which starts a child process) on this process's one long-lived spawning thread."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_serve, name="etude-spawner", daemon=True)
            _spawner.start()
    if threading.current_thread() is _spawner:
        return start()
    done: Future = Future()
    _requests.put((start, done))
    return done.result()


def die_with_parent(parent: int) -> None:
    """In a child: be killed as soon as `parent` is gone (even while busy), or exit now if it already is."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if hasattr(libc, "prctl") and libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
        if os.getppid() != parent:  # it died before the request took hold
            os._exit(1)
        return

    # No death signal here (not Linux): watch the parent instead.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL)
        os._exit(1)

    threading.Thread(target=watch, name="etude-render-parent", daemon=True).start()
