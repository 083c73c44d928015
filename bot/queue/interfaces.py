"""The queue's three small interfaces, each with an embedded and a Redis implementation.

| interface | embedded | Redis |
| --- | --- | --- |
| `Progress` | `scheduler.LocalProgress` | `redis_state.RedisProgress` |
| `Journal` | `journal.SQLiteJournal` (under `STATE_DIR`) | `redis_state.RedisJournal` |
| `Broker` | taskiq's `InMemoryBroker` | `redis_broker.EtudeStreamBroker` |

Without Redis the bot also runs the jobs itself, in a `LocalWorker` (`bot.worker.worker.Worker` is one) that
the top layer builds and hands in, so the bot's side never imports the worker or the model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from bot.queue.jobs import JobSpec
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


@runtime_checkable
class Broker(Protocol):
    """What the queue needs of a taskiq broker: start, stop, a task decorator and a result store."""

    result_backend: Any  # taskiq's, plus `forget(task_id)`: the result goes once its user has it

    async def startup(self) -> None: ...

    async def shutdown(self) -> None: ...

    def task(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class LocalWorker(Protocol):
    """A worker in the bot's own process: it runs the queue's task and says when it can."""

    ready: asyncio.Event  # set once the model and the render processes are loaded

    @property
    def card(self) -> dict:
        """The loaded model's card; empty until the model has loaded."""
        ...

    async def start(self) -> None: ...

    async def run(self, spec: dict, /) -> dict:
        """The queue's task: one job's spec in, its `JobResult` as a dict out."""
        ...

    async def close(self) -> None: ...


Publish = Callable[[str, dict], Awaitable[None]]  # progress events from the worker: (job id, event)
MakeWorker = Callable[[Settings, Publish], LocalWorker]  # `bot.worker.worker.Worker.from_settings` is one
