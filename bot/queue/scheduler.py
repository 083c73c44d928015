"""The bot's side of the queue: admission limits, place in the queue, progress, waiting for results."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable

from bot.aio import cancel_and_wait
from bot.errors import EtudeError
from bot.queue.interfaces import JobQueue, Journal, Progress, Results
from bot.queue.jobs import JobResult, JobSpec

log = logging.getLogger(__name__)


class QueueFull(EtudeError):
    """Too many jobs in all."""


class UserLimit(EtudeError):
    """Too many jobs from one user."""


class Restarting(EtudeError):
    """The bot is stopping: no new jobs."""


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

    async def ready(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryJournal:
    """A journal in memory, for a scheduler whose jobs need not outlive the process (tests, benchmarks)."""

    def __init__(self) -> None:
        self.specs: dict[str, JobSpec] = {}
        self.kicked: set[str] = set()
        self.answered: set[str] = set()

    async def add(self, spec: JobSpec) -> None:
        self.specs[spec.job_id] = spec

    async def mark_kicked(self, job_id: str) -> None:
        self.kicked.add(job_id)

    async def remove(self, job_id: str) -> None:
        self.specs.pop(job_id, None)
        self.kicked.discard(job_id)

    async def contains(self, job_id: str) -> bool:
        return job_id in self.specs

    async def delivered(self, job_id: str) -> bool:
        return job_id in self.answered

    async def mark_delivered(self, job_id: str) -> None:
        self.answered.add(job_id)

    async def pending(self) -> list[tuple[JobSpec, bool]]:
        return [(spec, job_id in self.kicked) for job_id, spec in self.specs.items()]

    async def close(self) -> None:
        return None


OnProgress = Callable[[dict], Awaitable[None]]
TOO_LONG = "this piece took too long to compose; please try again"
RESTARTING = "Étude is restarting; please try again in a minute"
CHECK_EVERY = 2.0  # seconds between checks that a job waited on is still in the journal


async def wait_for_result(
    results: Results,
    job_id: str,
    timeout: float,
    interval: float,
    check: Callable[[], Awaitable[None]] | None = None,
) -> JobResult:
    """Poll for a job's result; a result store that is briefly unreachable (Redis restarting) is waited out.

    `check()` runs every `CHECK_EVERY` seconds while waiting (to find a job its queue has lost).
    """
    deadline = time.monotonic() + timeout
    checked = time.monotonic()
    warned = False
    while True:
        if check is not None and time.monotonic() - checked > CHECK_EVERY:
            checked = time.monotonic()
            try:
                await check()
            except Exception as e:  # the store is away; the next round tries again
                log.debug("check of job %s failed: %s", job_id, e)
        try:
            result = await results.get(job_id)
            if result is not None:
                return result
        except Exception as e:  # the store is away; the job itself is safe in the queue
            if not warned:
                log.warning("result store unreachable while waiting for job %s: %s", job_id, e)
                warned = True
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result for {job_id} in {timeout:.0f} s")
        await asyncio.sleep(interval)


class Scheduler:
    """Admits jobs under the limits, submits them to the queue and waits for their results.

    `place` counts the jobs admitted before this one that no worker has started yet.
    """

    def __init__(
        self,
        queue: JobQueue,
        results: Results,
        progress: Progress,
        *,
        queue_max: int = 50,
        user_running: int = 1,
        user_waiting: int = 2,
        timeout: float = 600.0,
        journal: Journal | None = None,
    ):
        self.queue, self.results = queue, results
        self.progress = progress
        self.journal: Journal = journal or MemoryJournal()
        self.queue_max, self.user_running, self.user_waiting = queue_max, user_running, user_waiting
        self.timeout = timeout
        self.waiting: OrderedDict[str, JobSpec] = OrderedDict()
        self.running: dict[str, JobSpec] = {}
        self.waits: list[float] = []  # recent seconds from admission to the first note sampled
        self.draining = False
        self.answering: set[str] = set()  # jobs whose answer this process is sending now

    # -- admission, without I/O so the interaction can be answered at once ---------------------------------
    def admit(self, spec: JobSpec) -> int:
        """Take the job or raise `QueueFull` / `UserLimit` / `Restarting`; returns its place in the queue."""
        if self.draining:
            raise Restarting(RESTARTING)
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

    def release(self, job_id: str) -> None:
        """The job is answered (or was never queued): it no longer counts against the limits."""
        self.waiting.pop(job_id, None)
        self.running.pop(job_id, None)

    def track(self, spec: JobSpec) -> None:
        """Count a job queued before a restart of the bot against the limits until it is answered."""
        self.running[spec.job_id] = spec

    def drain(self) -> list[JobSpec]:
        """Stop admitting jobs (the bot is stopping); returns the jobs in flight."""
        self.draining = True
        return [*self.waiting.values(), *self.running.values()]

    def in_flight(self) -> int:
        return len(self.waiting) + len(self.running)

    # -- answering ---------------------------------------------------------------------------------------------
    async def claim_delivery(self, job_id: str) -> bool:
        """True when this process is to answer the job: nobody has answered it yet (a job that ran twice, or
        was answered before a restart, has) and this process is not answering it already."""
        if job_id in self.answering:
            return False
        self.answering.add(job_id)  # before the await: a second caller meanwhile sees it
        if await self.journal.delivered(job_id):
            self.answering.discard(job_id)
            return False
        return True

    def abandon(self, job_id: str) -> None:
        """This process stops answering the job (it is closing): the job stays in the journal, with its
        result, for the next start to answer."""
        self.answering.discard(job_id)

    async def answered(self, job_id: str, delivered: bool) -> None:
        """The job is done with: marked delivered when its user has the answer, then its journal entry and
        its stored result go. A job whose answer is still on its way when the bot stops is not passed here:
        it stays in the journal, with its result, and the next start answers it."""
        if delivered:
            await self.journal.mark_delivered(job_id)
        await self.journal.remove(job_id)
        await self.results.forget(job_id)
        self.answering.discard(job_id)

    # -- running ----------------------------------------------------------------------------------------------
    async def run(self, spec: JobSpec, on_progress: OnProgress | None = None) -> JobResult:
        """Kick an admitted job and wait for its result, passing progress events on as they come."""
        events = self.progress.subscribe(spec.job_id)

        async def pump() -> None:
            while True:
                event = await events.get()
                if event.get("stage") == "composing":  # sampling has begun: the wait is over
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
            await self.progress.ready()  # the job's "started" must find us listening
            await self.kick(spec)
            return await wait_for_result(
                self.results, spec.job_id, self.timeout, 0.1, lambda: self._still_queued(spec)
            )
        except TimeoutError:
            return JobResult(spec.job_id, False, error=TOO_LONG)
        finally:
            await cancel_and_wait([pumping])
            self.progress.unsubscribe(spec.job_id, events)
            self.release(spec.job_id)

    async def _still_queued(self, spec: JobSpec) -> None:
        """Queue a job again if its queue lost it (Redis restarted without its data): this bot still has it."""
        if await self.journal.contains(spec.job_id):
            return
        log.warning("job %s vanished from the queue (Redis lost its data?): queueing it again", spec.job_id)
        await self.journal.add(spec)
        await self.kick(spec)

    async def kick(self, spec: JobSpec) -> None:
        # Submitted under its own id: a job delivered twice by the queue has one result, answered once.
        await self.queue.submit(spec.job_id, spec.to_json())
        await self.journal.mark_kicked(spec.job_id)

    async def recover(self, spec: JobSpec, kicked: bool = True) -> JobResult:
        """Wait for the result of a job admitted before a restart of the bot, kicking it if it never was."""
        if not kicked:
            await self.kick(spec)
        try:
            return await wait_for_result(
                self.results, spec.job_id, self.timeout, 0.5, lambda: self._still_queued(spec)
            )
        except TimeoutError:
            return JobResult(spec.job_id, False, error=TOO_LONG)
