"""`cancel_and_wait` stops a task even when the first cancel is lost inside a library."""

from __future__ import annotations

import asyncio

import pytest

from bot.aio import cancel_and_wait

pytestmark = pytest.mark.timeout(30)


async def test_a_task_that_loses_its_first_cancel_is_still_stopped():
    asked = 0

    async def stubborn() -> None:
        nonlocal asked
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                asked += 1
                if asked == 1:  # as Python 3.11's wait_for does when its inner call completes at once
                    asyncio.current_task().uncancel()
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait([task], every=0.05)
    assert task.cancelled() and asked == 2


async def test_finished_failed_and_missing_tasks_are_fine_and_the_caller_is_skipped():
    async def fails() -> None:
        raise ValueError("boom")

    failed = asyncio.create_task(fails())
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await cancel_and_wait([failed, done, None, asyncio.current_task()])
    assert failed.done() and done.done()
