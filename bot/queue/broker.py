"""The queue's broker: taskiq in memory (the embedded mode) or on Redis streams, and the one task on it."""

from __future__ import annotations

import time
from typing import Any

from taskiq import InMemoryBroker
from taskiq.brokers.inmemory_broker import InmemoryResultBackend

from bot.queue.jobs import RESULT_TTL_SECONDS, TASK_NAME


class ReadOnceResults(InmemoryResultBackend):
    """Results held until their waiter reads them (then dropped: they hold the files).

    Bounded by age, not count: a count would drop the unread results of a large batch that finished at once.
    A result nobody reads for `max_age` seconds (its waiter gone with a closed bot) is dropped.
    """

    def __init__(self, max_age: float = 900.0):
        super().__init__(max_stored_results=-1)
        self.max_age = max_age
        self.stored: dict[str, float] = {}

    async def set_result(self, task_id: str, result) -> None:
        now = time.monotonic()
        for old in [k for k, t in self.stored.items() if now - t > self.max_age]:
            self.stored.pop(old, None)
            self.results.pop(old, None)
        self.stored[task_id] = now
        await super().set_result(task_id, result)

    async def get_result(self, task_id: str, with_logs: bool = False):
        self.stored.pop(task_id, None)
        return self.results.pop(task_id)

    async def forget(self, task_id: str) -> None:
        """Drop a result nobody read (one that was read is gone already; a restart reruns the job)."""
        self.stored.pop(task_id, None)
        self.results.pop(task_id, None)


def make_broker(
    redis_url: str | None = None,
    reclaim_seconds: float = 15.0,
    fetch: int = 8,
    result_seconds: float = 900.0,
    consumer: str | None = None,
):
    """taskiq's in-memory broker, or a Redis streams broker (acknowledged) with a Redis result backend."""
    if not redis_url:
        broker = InMemoryBroker(max_async_tasks=256)
        return broker.with_result_backend(ReadOnceResults(result_seconds))
    from bot.queue.redis_broker import make_redis_broker

    return make_redis_broker(redis_url, reclaim_seconds, fetch, RESULT_TTL_SECONDS, consumer)


def register(broker, run_job) -> Any:
    """Register the compose task on `broker`; `run_job(spec_json) -> result_json` does the work."""

    @broker.task(task_name=TASK_NAME)
    async def compose_task(spec: dict) -> dict:
        return await run_job(spec)

    return compose_task
