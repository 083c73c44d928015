"""Stopping asyncio tasks for certain, and waits that a stop request ends.

`task.cancel()` asks once, and a library can lose that request: Python 3.11's `asyncio.wait_for`, which
redis-py and aiohttp use inside their calls, returns its inner result instead of raising when the cancel
arrives just as that result does, and the task runs on as if never asked. A bot that cancels its waiting
jobs on close would then wait for a job that is not coming. `cancel_and_wait` asks again until every
task has stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def cancel_and_wait(tasks: Iterable[asyncio.Task | None], every: float = 0.5) -> None:
    """Cancel `tasks` and wait until all are done, cancelling again every `every` seconds those that are
    not; None and the caller's own task are skipped. What the tasks raised is dropped (they were stopped)."""
    me = asyncio.current_task()
    mine = [t for t in tasks if t is not None and t is not me]
    left = {t for t in mine if not t.done()}
    while left:
        for task in left:
            task.cancel()
        _done, left = await asyncio.wait(left, timeout=every)
    for task in mine:  # retrieved, so that asyncio does not log "exception was never retrieved"
        if not task.cancelled():
            task.exception()


class Stopped(Exception):
    """A wait that a stop request (SIGTERM) ended before what it waited for came."""


async def unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T:
    """`await aw`, unless `stop` is set first: then `aw` is cancelled and `Stopped` raised. Start-up waits
    (for Redis, for the model, for Discord) go through here, so a SIGTERM during them is honoured."""
    task = asyncio.ensure_future(aw)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # asked once, then again only if lost: a clean-up inside may take a moment
            await cancel_and_wait([task], every=5.0)
        await cancel_and_wait([stopping])
    if task.cancelled():
        raise Stopped()
    return task.result()
