"""The bot's side of the queue: admission limits, place in the queue, progress, waiting for results."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable

from taskiq.exceptions import TaskiqResultTimeoutError

from bot.errors import EtudeError
from bot.queue.jobs import JobResult, JobSpec

log = logging.getLogger(__name__)


class QueueFull(EtudeError):
    """Too many jobs in all."""


class UserLimit(EtudeError):
    """Too many jobs from one user."""


class LocalProgress:
    """In-process progress events: what a worker publishes, the job's waiter receives."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[asyncio.Queue]] = defaultdict(list)

    async def publish(self, job_id: str, event: dict) -> None:
        for q in self.subscribers.get(job_id, []):
            q.put_nowait(event)

    def subscribe(self, job_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.subscribers[job_id].append(q)
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None:
        subs = self.subscribers.get(job_id, [])
        if q in subs:
            subs.remove(q)
        if not subs:
            self.subscribers.pop(job_id, None)

    async def close(self) -> None:
        return None


class LocalJournal:
    """Jobs in flight, kept only in memory: the embedded queue dies with the bot anyway."""

    async def add(self, spec: JobSpec) -> None:
        return None

    async def mark_kicked(self, job_id: str) -> None:
        return None

    async def remove(self, job_id: str) -> None:
        return None

    async def claim_delivery(self, job_id: str) -> bool:
        return True

    async def pending(self) -> list[tuple[JobSpec, bool]]:
        return []


Progress = Callable[[dict], Awaitable[None]]


async def wait_for_result(handle, timeout: float, interval: float):
    """Poll for a task's result; a result store that is briefly unreachable (Redis restarting) is waited out."""
    deadline = time.monotonic() + timeout
    warned = False
    while True:
        try:
            if await handle.is_ready():
                return await handle.get_result()
        except Exception as e:  # taskiq wraps the connection error; the job itself is safe in the queue
            if not warned:
                log.warning("result store unreachable while waiting for job %s: %s", handle.task_id, e)
                warned = True
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result for {handle.task_id} in {timeout:.0f} s")
        await asyncio.sleep(interval)


class Scheduler:
    """Admits jobs under the limits, hands them to the broker and waits for their results.

    `place` counts the jobs admitted before this one that no worker has started yet.
    """

    def __init__(
        self,
        task,
        progress,
        *,
        queue_max: int = 50,
        user_running: int = 1,
        user_waiting: int = 2,
        timeout: float = 600.0,
        journal=None,
    ):
        self.task = task  # the taskiq task: `await task.kiq(spec_json)`
        self.progress = progress
        self.journal = journal or LocalJournal()
        self.queue_max, self.user_running, self.user_waiting = queue_max, user_running, user_waiting
        self.timeout = timeout
        self.waiting: OrderedDict[str, JobSpec] = OrderedDict()
        self.running: dict[str, JobSpec] = {}
        self.waits: list[float] = []  # recent seconds from admission to start

    # -- admission, without I/O so the interaction can be answered at once ---------------------------------
    def admit(self, spec: JobSpec) -> int:
        """Take the job or raise `QueueFull` / `UserLimit`; returns its place in the queue."""
        total = len(self.waiting) + len(self.running)
        if total >= self.queue_max:
            raise QueueFull(
                f"I'm busy right now ({total} pieces in the queue). Please try again in a few minutes."
            )
        mine = [s for s in (*self.waiting.values(), *self.running.values()) if s.user_id == spec.user_id]
        if len(mine) >= self.user_running + self.user_waiting:
            raise UserLimit(
                f"You already have {len(mine)} pieces on the way; you can have {self.user_running + self.user_waiting} "
                "at once. Try again when one has arrived."
            )
        self.waiting[spec.job_id] = spec
        return len(self.waiting)

    def place(self, job_id: str) -> int:
        for i, key in enumerate(self.waiting):
            if key == job_id:
                return i + 1
        return 0

    def median_wait(self) -> float | None:
        recent = sorted(self.waits[-50:])
        return recent[len(recent) // 2] if recent else None

    def _started(self, job_id: str) -> None:
        spec = self.waiting.pop(job_id, None)
        if spec is not None:
            self.running[job_id] = spec
            self.waits.append(time.time() - spec.submitted)

    def _finished(self, job_id: str) -> None:
        self.waiting.pop(job_id, None)
        self.running.pop(job_id, None)

    # -- running ----------------------------------------------------------------------------------------------
    async def run(self, spec: JobSpec, on_progress: Progress | None = None) -> JobResult:
        """Kick an admitted job and wait for its result, passing progress events on as they come."""
        events = self.progress.subscribe(spec.job_id)

        async def pump() -> None:
            while True:
                event = await events.get()
                if event.get("stage") == "started":
                    self._started(spec.job_id)
                if on_progress:
                    try:
                        await on_progress({**event, "place": self.place(spec.job_id)})
                    except Exception:  # progress is a courtesy: never let it sink the job
                        log.exception("progress update for job %s failed", spec.job_id)

        pumping = asyncio.create_task(pump())
        try:
            # Journal first, then the queue: a bot that stops between the two kicks the job when it is back.
            await self.journal.add(spec)
            handle = await self.kick(spec)
            result = await wait_for_result(handle, self.timeout, 0.1)
            if result.is_err:
                log.error("job %s raised in the worker: %s", spec.job_id, result.error)
                return JobResult(spec.job_id, False, error=f"something went wrong (ref {spec.job_id[:8]})")
            return JobResult.from_json(result.return_value)
        except (TimeoutError, TaskiqResultTimeoutError):
            return JobResult(
                spec.job_id, False, error="this piece took too long to compose; please try again"
            )
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
            self.progress.unsubscribe(spec.job_id, events)
            self._finished(spec.job_id)

    async def kick(self, spec: JobSpec):
        # The job id is the task id: a job delivered twice by the queue has one result, answered once.
        handle = await self.task.kicker().with_task_id(spec.job_id).kiq(spec.to_json())
        await self.journal.mark_kicked(spec.job_id)
        return handle

    async def recover(self, spec: JobSpec, kicked: bool = True) -> JobResult:
        """Wait for the result of a job admitted before a restart of the bot, kicking it if it never was."""
        from taskiq import AsyncTaskiqTask

        if not kicked:
            await self.kick(spec)
        handle = AsyncTaskiqTask(spec.job_id, self.task.broker.result_backend)
        try:
            result = await wait_for_result(handle, self.timeout, 0.5)
        except (TimeoutError, TaskiqResultTimeoutError):
            return JobResult(
                spec.job_id, False, error="this piece took too long to compose; please try again"
            )
        if result.is_err:
            return JobResult(spec.job_id, False, error=f"something went wrong (ref {spec.job_id[:8]})")
        return JobResult.from_json(result.return_value)
