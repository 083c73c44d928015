"""The queue's broker: taskiq in memory (the embedded mode) or on Redis streams, and the one task on it."""

from __future__ import annotations

from typing import Any

from taskiq import InMemoryBroker
from taskiq.brokers.inmemory_broker import InmemoryResultBackend

from bot.queue.jobs import RESULT_TTL_SECONDS, TASK_NAME


class ReadOnceResults(InmemoryResultBackend):
    """Results held until their waiter reads them (then dropped: they hold the files), at most `max_stored`."""

    async def get_result(self, task_id: str, with_logs: bool = False):
        return self.results.pop(task_id)


def make_broker(
    redis_url: str | None = None, reclaim_seconds: float = 15.0, fetch: int = 8, results_max: int = 32
):
    """taskiq's in-memory broker, or a Redis streams broker (acknowledged) with a Redis result backend."""
    if not redis_url:
        broker = InMemoryBroker(max_async_tasks=256)
        return broker.with_result_backend(ReadOnceResults(max_stored_results=results_max))
    from bot.queue.redis_broker import make_redis_broker

    return make_redis_broker(redis_url, reclaim_seconds, fetch, RESULT_TTL_SECONDS)


def register(broker, run_job) -> Any:
    """Register the compose task on `broker`; `run_job(spec_json) -> result_json` does the work."""

    @broker.task(task_name=TASK_NAME)
    async def compose_task(spec: dict) -> dict:
        return await run_job(spec)

    return compose_task
