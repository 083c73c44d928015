"""The queue as the bot sees it: the queue and its results, a progress channel, a scheduler, and, without
Redis, a worker in the bot's own process that the top layer builds (`LocalWorker`), so the bot loads no
model otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.errors import BadOption
from bot.queue.interfaces import JobQueue, LocalWorker, MakeWorker, Progress, Results
from bot.queue.scheduler import LocalProgress, Scheduler
from bot.settings import Settings


@dataclass
class Runtime:
    """The queue's parts for one bot process; `worker` is the embedded one, None when `etude worker`s
    serve a Redis queue."""

    queue: JobQueue
    results: Results
    progress: Progress
    scheduler: Scheduler
    worker: LocalWorker | None = None

    @classmethod
    async def start(cls, settings: Settings, make_worker: MakeWorker | None = None, on_wait=None) -> Runtime:
        """Start the queue; in Redis mode wait for Redis (`on_wait(attempt)` after each failed try).

        Without `REDIS_URL` the jobs run in this process, in `make_worker(settings, publish)`'s worker.
        """
        if not settings.redis_url and make_worker is None:
            raise BadOption("REDIS_URL is not set and this process runs no worker: set REDIS_URL")
        worker = None
        queue: JobQueue
        results: Results
        if settings.redis_url:
            from bot.queue.redis_state import RedisJournal, RedisProgress, wait_for_redis
            from bot.queue.results import RedisResults
            from bot.queue.streams import JobStream

            await wait_for_redis(settings.redis_url, on_wait)
            progress = RedisProgress(settings.redis_url)
            journal = RedisJournal(settings.redis_url)
            results = RedisResults(settings.redis_url)
            queue = JobStream(settings.redis_url, reclaim_seconds=settings.reclaim_seconds)
        else:
            from bot.queue.journal import SQLiteJournal
            from bot.queue.memory import MemoryQueue
            from bot.queue.results import MemoryResults

            progress = LocalProgress()
            journal = SQLiteJournal(state_folder(settings) / "journal.sqlite3")
            worker = make_worker(settings, progress.publish)
            results = MemoryResults(settings.embedded_result_seconds)
            queue = MemoryQueue(worker.run, results)
        await queue.start()
        scheduler = Scheduler(
            queue,
            results,
            progress,
            queue_max=settings.queue_max,
            user_running=settings.user_max_running,
            user_waiting=settings.user_max_waiting,
            timeout=settings.job_timeout_seconds,
            journal=journal,
        )
        runtime = cls(queue, results, progress, scheduler, worker)
        if worker is not None:
            # The model and the soundfont load before the bot logs in: a broken set-up stops here, in
            # one line, instead of leaving a bot online with no worker behind it.
            try:
                await worker.start()
            except BaseException:
                await runtime.close()
                raise
        return runtime

    async def status(self) -> tuple[int, int]:
        """Jobs waiting or running, and workers online."""
        sched = self.scheduler
        if self.worker is not None:
            return len(sched.waiting) + len(sched.running), int(self.worker.ready.is_set())
        from bot.queue.redis_state import queue_depth, workers_online

        redis = self.progress.redis
        try:
            return await queue_depth(redis), len(await workers_online(redis))
        except Exception:  # Redis away: say what the bot itself knows
            return len(sched.waiting) + len(sched.running), 0

    async def status_depth(self) -> int:
        return (await self.status())[0]

    async def healthy(self) -> bool:
        if self.worker is not None:
            return self.worker.ready.is_set()
        try:
            return bool(await self.progress.redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.queue.close()  # the embedded queue stops running jobs before their worker goes
        if self.worker:
            await self.worker.close()
        await self.progress.close()
        await self.scheduler.journal.close()
        await self.results.close()


def state_folder(settings: Settings) -> Path:
    """`STATE_DIR`, or ~/.cache/etude: the bot's small durable state (journal, seeds)."""
    return Path(settings.state_dir) if settings.state_dir else Path.home() / ".cache" / "etude"
