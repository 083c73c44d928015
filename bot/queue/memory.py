"""The embedded mode's queue: jobs in the bot's memory, run in the bot's process by its own worker.

Nothing here outlives the process: the bot's SQLite journal does, and a restarted bot queues again every
job it had not answered (`bot.queue.journal`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.aio import cancel_and_wait
from bot.queue.consume import consume
from bot.queue.interfaces import Delivery, Results
from bot.queue.jobs import JobResult

RunJob = Callable[[dict], Awaitable[JobResult]]


class MemoryQueue:
    """`JobQueue` and `Consumer` in one: `start` runs the submitted jobs, at most `limit` at once, with `run`,
    and stores each result in `results`."""

    def __init__(self, run: RunJob | None = None, results: Results | None = None, limit: int = 256):
        self.run, self.results, self.limit = run, results, limit
        self.waiting: asyncio.Queue[Delivery] = asyncio.Queue()
        self.held: dict[str, Delivery] = {}  # handed to the runner and not yet acknowledged
        self.stop = asyncio.Event()
        self.runner: asyncio.Task | None = None

    async def start(self) -> None:
        if self.run is not None and self.results is not None and self.runner is None:
            self.runner = asyncio.create_task(
                consume(self, self.results, self.run, limit=self.limit, stop=self.stop, deadline=0),
                name="etude-embedded-queue",
            )

    async def submit(self, job_id: str, spec: dict) -> None:
        self.waiting.put_nowait(Delivery(job_id, spec))

    async def jobs(self) -> AsyncIterator[Delivery]:
        while True:
            job = await self.waiting.get()
            self.held[job.job_id] = job
            yield job

    async def ack(self, job: Delivery) -> None:
        self.held.pop(job.job_id, None)

    async def release(self, job: Delivery) -> None:
        """Its result could not be stored: it runs again."""
        if self.held.pop(job.job_id, None) is not None:
            self.waiting.put_nowait(job)

    async def hand_back(self) -> int:
        held = list(self.held.values())
        self.held.clear()
        for job in held:
            self.waiting.put_nowait(job)
        return len(held)

    async def close(self) -> None:
        """Stop running jobs; what was queued goes with the process (the journal has it)."""
        self.stop.set()
        await cancel_and_wait([self.runner])
        self.runner = None
