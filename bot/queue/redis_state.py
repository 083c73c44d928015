"""Redis mode, the bot's side: waiting for Redis, progress over pub/sub, the bot's record of jobs in flight,
and what the queue holds now (its depth, the workers online). The queue itself is `streams`."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, ResponseError

from bot.aio import cancel_and_wait
from bot.errors import BadOption
from bot.queue.jobs import KEEP_DELIVERED_SECONDS, JobSpec
from bot.queue.redis_keys import DELIVERED, DOWN, KICKED, PENDING, PROGRESS, STREAM, WORKERS, client
from bot.queue.scheduler import LocalProgress

log = logging.getLogger(__name__)


def _refused(e: Exception) -> bool:
    """True for a Redis that answers but rejects our credentials: waiting will not help."""
    text = str(e).upper()
    return isinstance(e, AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text


async def wait_for_redis(url: str, on_attempt=None, max_delay: float = 5.0) -> None:
    """Return once Redis answers PING; log one line per failed attempt; `BadOption` for a refused login."""
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        conn = Redis.from_url(url, retry=Retry(ExponentialBackoff(), 0), socket_connect_timeout=2)
        try:
            await conn.ping()
            if attempt > 1:
                log.info("Redis is reachable after %d attempts", attempt)
            return
        except (ResponseError, *DOWN) as e:
            if _refused(e):
                raise BadOption("Redis refused the login in REDIS_URL (wrong user or password)") from None
            if isinstance(e, ResponseError):
                raise
            if on_attempt is not None:
                on_attempt(attempt)
            log.warning("Redis unreachable (attempt %d: %s); retrying in %.1f s", attempt, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        finally:
            await conn.aclose()


class RedisProgress:
    """Progress from workers to the bot over Redis pub/sub (`bot.queue.interfaces.Progress`); in the bot, a
    `LocalProgress` hands each event to the job's waiters."""

    def __init__(self, url: str):
        self.redis = client(url, attempts=3)
        self.local = LocalProgress()
        self.reader: asyncio.Task | None = None
        self.listening = asyncio.Event()  # set while the pattern subscription is live

    async def publish(self, job_id: str, event: dict) -> None:
        try:
            await self.redis.publish(PROGRESS + job_id, json.dumps(event))
        except DOWN:  # progress is a courtesy; the job goes on
            log.debug("progress for %s not sent: Redis unreachable", job_id)

    def subscribe(self, job_id: str) -> asyncio.Queue:
        self._listen()
        return self.local.subscribe(job_id)

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None:
        self.local.unsubscribe(job_id, q)

    async def ready(self, wait: float = 5.0) -> None:
        """Until the subscription is live, so that a job kicked now has its "started" heard (Redis pub/sub
        keeps nothing for a subscriber that comes late); at most `wait` seconds: progress is a courtesy."""
        self._listen()
        try:
            await asyncio.wait_for(self.listening.wait(), wait)
        except TimeoutError:
            log.debug("progress subscription not live after %.0f s; the job goes on", wait)

    def _listen(self) -> None:
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        delay = 0.2
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.psubscribe(PROGRESS + "*")
                self.listening.set()
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    job_id = message["channel"].decode()[len(PROGRESS) :]
                    await self.local.publish(job_id, json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except DOWN:
                self.listening.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        await cancel_and_wait([self.reader])
        await self.redis.aclose()


class RedisJournal:
    """The bot's record of jobs in flight (`bot.queue.interfaces.Journal`), shared by restarts of the bot."""

    def __init__(self, url: str):
        self.redis = client(url, attempts=50)

    async def add(self, spec: JobSpec) -> None:
        await self.redis.hset(PENDING, spec.job_id, json.dumps(spec.to_json()))

    async def mark_kicked(self, job_id: str) -> None:
        await self.redis.hset(KICKED, job_id, 1)

    async def remove(self, job_id: str) -> None:
        await self.redis.hdel(PENDING, job_id)
        await self.redis.hdel(KICKED, job_id)

    async def contains(self, job_id: str) -> bool:
        return bool(await self.redis.hexists(PENDING, job_id))

    async def delivered(self, job_id: str) -> bool:
        return bool(await self.redis.exists(DELIVERED + job_id))

    async def mark_delivered(self, job_id: str) -> None:
        await self.redis.set(DELIVERED + job_id, 1, ex=KEEP_DELIVERED_SECONDS)

    async def pending(self) -> list[tuple[JobSpec, bool]]:
        """(spec, kicked) for every job not yet answered."""
        raw = await self.redis.hgetall(PENDING)
        kicked = await self.redis.hgetall(KICKED)
        return [(JobSpec.from_json(json.loads(v)), k in kicked) for k, v in raw.items()]

    async def close(self) -> None:
        await self.redis.aclose()


async def queue_depth(redis: Redis) -> int:
    """Jobs waiting or running: the stream holds exactly those, since a finished job's entry is deleted."""
    return int(await redis.xlen(STREAM))


async def workers_online(redis: Redis, within: float = 15.0) -> list[str]:
    beats = await redis.hgetall(WORKERS)
    now = time.time()
    return sorted(k.decode() for k, v in beats.items() if now - float(v) < within)
