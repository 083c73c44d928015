"""Running a queue's jobs: at most `limit` at once, each run → its result stored → acknowledged.

The same loop serves the embedded queue in the bot's process and `etude worker` on the Redis stream. A job
is acknowledged only once its result is stored, so a runner that dies in between leaves the job to run
again, never a job without an answer. On stop it reads no more, gives the running jobs `deadline` seconds
to finish, and hands the rest back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.aio import cancel_and_wait
from bot.errors import reference, went_wrong
from bot.queue.interfaces import Consumer, Delivery, Results
from bot.queue.jobs import JobResult

log = logging.getLogger(__name__)


async def _run(run: Callable[[dict], Awaitable[JobResult]], job: Delivery) -> JobResult:
    """The job's result; a runner that raises still answers the user, with a reference to the log."""
    try:
        return await run(job.spec)
    except Exception:
        ref = reference(job.job_id)
        log.exception("job %s raised (ref %s)", job.job_id, ref)
        return JobResult(job.job_id, False, error=went_wrong(ref), info={"ref": ref})


async def consume(
    queue: Consumer,
    results: Results,
    run: Callable[[dict], Awaitable[JobResult]],
    *,
    limit: int,
    stop: asyncio.Event,
    deadline: float,
) -> int:
    """Run `queue`'s jobs until `stop` is set; returns how many jobs were handed back unfinished."""
    slots = asyncio.Semaphore(limit)
    running: set[asyncio.Task] = set()

    async def one(job: Delivery) -> None:
        try:
            result = await _run(run, job)
            try:
                await results.put(result)
            except Exception as e:  # not stored: not acknowledged either, so the job runs again
                log.error("the result of job %s could not be stored: %s", job.job_id, e)
                await queue.release(job)
                return
            await queue.ack(job)
        finally:
            slots.release()

    async def read() -> None:
        jobs = aiter(queue.jobs())
        try:
            while True:
                # A free slot first: a job read and left waiting here is one another runner could start.
                await slots.acquire()
                job = await anext(jobs)
                task = asyncio.create_task(one(job), name=f"etude-job-{job.job_id[:12]}")
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            await jobs.aclose()

    reading = asyncio.create_task(read(), name="etude-read")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if reading.done():  # the queue failed for good: say why, after the jobs are handed back
            reading.result()
    finally:
        await cancel_and_wait([reading, stopping])
        if running and deadline > 0:
            log.info("stopping: finishing %d running jobs within %.0f s", len(running), deadline)
            await asyncio.wait(set(running), timeout=deadline)
        await cancel_and_wait(list(running))
        handed = await queue.hand_back()
    return handed
