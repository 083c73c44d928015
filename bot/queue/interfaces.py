"""The queue's small interfaces, each with an embedded and a Redis implementation.

| interface | embedded | Redis |
| --- | --- | --- |
| `Progress` | `scheduler.LocalProgress` | `redis_state.RedisProgress` |
| `Journal` | `journal.SQLiteJournal` (under `STATE_DIR`) | `redis_state.RedisJournal` |
| `JobQueue` (and `Consumer`) | `memory.MemoryQueue` | `streams.JobStream` |
| `Results` | `results.MemoryResults` | `results.RedisResults` |

Whoever runs jobs reads them from a `Consumer` with `consume.consume`: the embedded queue runs it in the bot
process, `etude worker` against the Redis stream.

Without Redis the bot also runs the jobs itself, in a `LocalWorker` (`bot.worker.worker.Worker` is one) that
the top layer builds and hands in, so the bot's side never imports the worker or the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.queue.jobs import JobResult, JobSpec
from bot.settings import Settings


@runtime_checkable
class Progress(Protocol):
    """Progress events from whoever runs a job to whoever waits for it."""

    async def publish(self, job_id: str, event: dict) -> None: ...

    def subscribe(self, job_id: str) -> asyncio.Queue: ...

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None: ...

    async def ready(self) -> None:
        """Until an event published from now on reaches its subscribers."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Journal(Protocol):
    """The bot's durable record of jobs not yet answered, so a restarted bot answers them, and once."""

    async def add(self, spec: JobSpec) -> None: ...

    async def mark_kicked(self, job_id: str) -> None: ...

    async def remove(self, job_id: str) -> None: ...

    async def contains(self, job_id: str) -> bool: ...

    async def delivered(self, job_id: str) -> bool:
        """True once the job's user has been answered (by this process or an earlier one)."""
        ...

    async def mark_delivered(self, job_id: str) -> None:
        """The user has the answer: a job that ran twice, or a restart, must not answer it again."""
        ...

    async def pending(self) -> list[tuple[JobSpec, bool]]:
        """(spec, kicked) for every job not yet answered; kicked means it is still in the queue."""
        ...

    async def close(self) -> None: ...


@dataclass
class Delivery:
    """One job handed to its runner: `ref` is the queue's own handle (a stream entry's id)."""

    job_id: str
    spec: dict
    ref: object = None


@runtime_checkable
class JobQueue(Protocol):
    """The bot's end of the queue: jobs go in, by id; a job submitted twice runs at least once."""

    async def start(self) -> None: ...

    async def submit(self, job_id: str, spec: dict) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Consumer(Protocol):
    """The runner's end: each job to run, then `ack` once its result is stored."""

    def jobs(self) -> AsyncIterator[Delivery]:
        """Jobs as they are to run; the next is taken only when the runner asks for it."""
        ...

    async def ack(self, job: Delivery) -> None:
        """The job's result is stored: the job leaves the queue."""
        ...

    async def release(self, job: Delivery) -> None:
        """The job's result could not be stored: stop holding it, so that it runs again."""
        ...

    async def hand_back(self) -> int:
        """Every job held and not acknowledged goes back to the queue for others; returns how many."""
        ...


@runtime_checkable
class Results(Protocol):
    """Finished jobs' results, kept until `forget` (once the user has the answer) or until they expire."""

    async def put(self, result: JobResult) -> None: ...

    async def get(self, job_id: str) -> JobResult | None:
        """The result, or None while there is none."""
        ...

    async def forget(self, job_id: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class LocalWorker(Protocol):
    """A worker in the bot's own process: it runs the queue's task and says when it can."""

    ready: asyncio.Event  # set once the model and the render processes are loaded

    @property
    def card(self) -> dict:
        """The loaded model's card; empty until the model has loaded."""
        ...

    async def start(self) -> None: ...

    async def run(self, spec: dict, /) -> JobResult:
        """One job's spec in, its result out; a failure is a result with a message fit for the user."""
        ...

    async def close(self) -> None: ...


Publish = Callable[[str, dict], Awaitable[None]]  # progress events from the worker: (job id, event)
MakeWorker = Callable[[Settings, Publish], LocalWorker]  # `bot.worker.worker.Worker.from_settings` is one
