"""Finished jobs' results (`bot.queue.interfaces.Results`): in the bot's memory, or in Redis.

Either way a result stays until `forget` (the bot calls it once the user has the answer), so a bot that
stops while Discord refuses a piece finds it again; an age bound drops what nobody will come for. In Redis a
result is one hash per job, `etude:result:<job id>`: field `meta` holds the description as JSON and field
`file:<i>` the i-th file's bytes, raw (no base64), written in one transaction with its time to live.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.queue.jobs import RESULT_TTL_SECONDS, JobResult
from bot.queue.redis_keys import RESULT, retry


class MemoryResults:
    """Results in this process, each kept until `forget` or until it is `max_age` seconds old.

    Bounded by age, not count: a count would drop the unread results of a large batch that finished at once.
    """

    def __init__(self, max_age: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.max_age, self.clock = max_age, clock
        self.stored: dict[str, tuple[float, JobResult]] = {}

    async def put(self, result: JobResult) -> None:
        now = self.clock()
        for old in [k for k, (t, _) in self.stored.items() if now - t > self.max_age]:
            del self.stored[old]
        self.stored[result.job_id] = (now, result)

    async def get(self, job_id: str) -> JobResult | None:
        kept = self.stored.get(job_id)
        if kept is None or self.clock() - kept[0] > self.max_age:
            return None
        return kept[1]

    async def forget(self, job_id: str) -> None:
        self.stored.pop(job_id, None)

    async def close(self) -> None:
        self.stored.clear()


class RedisResults:
    """Results in Redis, shared by the workers that store them and the bots that read them.

    Storing waits out a restart of Redis (about ten minutes of retries) rather than lose a finished piece.
    """

    def __init__(self, url: str, ttl: int = RESULT_TTL_SECONDS):
        self.ttl = ttl
        self.redis = Redis.from_url(
            url,
            retry=retry(300),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_timeout=60,  # a result is megabytes: give a busy machine time to move it
        )

    async def put(self, result: JobResult) -> None:
        key = RESULT + result.job_id
        async with self.redis.pipeline(transaction=True) as pipe:
            # Replaced whole: a job that ran twice leaves one result, never a mix of two.
            pipe.delete(key).hset(key, mapping=result.to_parts()).expire(key, self.ttl)
            await pipe.execute()

    async def get(self, job_id: str) -> JobResult | None:
        parts = await self.redis.hgetall(RESULT + job_id)
        return JobResult.from_parts(parts) if parts else None

    async def forget(self, job_id: str) -> None:
        await self.redis.delete(RESULT + job_id)

    async def close(self) -> None:
        await self.redis.aclose()
