"""Redis mode: the streams broker, progress over pub/sub, and the bot's record of jobs in flight.

Why a subclass of taskiq-redis's stream broker: its listener reclaims a dead consumer's messages only
after new messages arrive, so on a quiet queue a job held by a killed worker would wait for the next
request; and a dropped connection (Redis restarted) ends its generator. Ours reclaims on every poll and
reconnects with a short back-off, so the recovery time is `reclaim_seconds` plus one poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

log = logging.getLogger(__name__)

STREAM = "etude:jobs"
GROUP = "etude-workers"
PENDING = "etude:pending"  # hash job_id -> job spec JSON, kept by the bot until the user is answered
KICKED = "etude:kicked"  # hash job_id -> 1 once the job is in the stream
DELIVERED = "etude:delivered:"  # SET NX marker: a job is answered once, whoever answers it
PROGRESS = "etude:progress:"
WORKERS = "etude:workers"  # hash worker name -> last heartbeat (epoch seconds)
DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


class EtudeStreamBroker(RedisStreamBroker):
    """A Redis streams broker that reclaims unacknowledged jobs on every poll and survives restarts of Redis."""

    def __init__(self, url: str, *, reclaim_seconds: float = 15.0, fetch: int = 8, **kw):
        super().__init__(
            url,
            queue_name=STREAM,
            consumer_group_name=GROUP,
            xread_block=1000,
            idle_timeout=int(reclaim_seconds * 1000),
            xread_count=fetch,
            **kw,
        )
        self.inflight: set[bytes] = set()
        self.toucher: asyncio.Task | None = None

    def _ack_generator(self, id, queue_name):
        ack = super()._ack_generator(id, queue_name)

        async def _ack() -> None:
            try:
                await _retry(ack)
            finally:
                self.inflight.discard(id)

        return _ack

    async def _touch(self) -> None:
        """Reset the idle time of jobs this worker is still running, so only a silent worker loses them."""
        while True:
            await asyncio.sleep(self.idle_timeout / 3000)
            if not self.inflight:
                continue
            try:
                async with Redis(connection_pool=self.connection_pool) as conn:
                    await conn.xclaim(
                        STREAM,
                        GROUP,
                        self.consumer_name,
                        min_idle_time=0,
                        message_ids=list(self.inflight),
                        justid=True,
                    )
            except DOWN:
                pass

    async def kick(self, message) -> None:
        for attempt in range(30):  # Redis may be restarting: wait for it rather than lose the job
            try:
                return await super().kick(message)
            except DOWN:
                if attempt == 29:
                    raise
                await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        if self.toucher is None or self.toucher.done():
            self.toucher = asyncio.create_task(self._touch())
        delay = 0.2
        while True:
            try:
                async with Redis(connection_pool=self.connection_pool) as conn:
                    await self._ensure_group(conn)
                    while True:
                        fetched = await conn.xreadgroup(
                            GROUP, self.consumer_name, {STREAM: ">"}, block=self.block, count=self.count
                        )
                        delay = 0.2
                        for _stream, messages in fetched or []:
                            for msg_id, msg in messages:
                                self.inflight.add(msg_id)
                                yield AckableMessage(
                                    data=msg[b"data"], ack=self._ack_generator(msg_id, STREAM)
                                )
                        # Jobs left unacknowledged by a worker that died go to whoever polls next.
                        _next, claimed, *_ = await conn.xautoclaim(
                            STREAM,
                            GROUP,
                            self.consumer_name,
                            min_idle_time=self.idle_timeout,
                            count=self.count,
                        )
                        for msg_id, msg in claimed:
                            if msg:  # an entry trimmed from the stream comes back empty
                                log.warning("reclaimed job message %s from a silent worker", msg_id)
                                self.inflight.add(msg_id)
                                yield AckableMessage(
                                    data=msg[b"data"], ack=self._ack_generator(msg_id, STREAM)
                                )
            except DOWN as e:
                log.warning("Redis unreachable (%s); retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _ensure_group(self, conn: Redis) -> None:
        try:
            await conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as e:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(e):
                raise

    async def shutdown(self) -> None:
        if self.toucher:
            self.toucher.cancel()
            await asyncio.gather(self.toucher, return_exceptions=True)
        await super().shutdown()

    async def startup(self) -> None:
        await super(RedisStreamBroker, self).startup()
        for attempt in range(50):
            try:
                async with Redis(connection_pool=self.connection_pool) as conn:
                    await self._ensure_group(conn)
                return
            except DOWN:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)


class PatientResultBackend(RedisAsyncResultBackend):
    """Stores a finished job's result even if Redis is restarting at that moment, rather than redo the job."""

    async def set_result(self, task_id, result) -> None:
        await _retry(lambda: super(PatientResultBackend, self).set_result(task_id, result), attempts=300)


def make_redis_broker(url: str, reclaim_seconds: float = 15.0, fetch: int = 8, result_ttl: int = 3600):
    backend = PatientResultBackend(url, result_ex_time=result_ttl)
    return EtudeStreamBroker(url, reclaim_seconds=reclaim_seconds, fetch=fetch).with_result_backend(backend)


class RedisProgress:
    """Progress from workers to the bot over Redis pub/sub; the same interface as `LocalProgress`."""

    def __init__(self, url: str):
        self.redis = Redis.from_url(url)
        self.queues: dict[str, list[asyncio.Queue]] = {}
        self.pubsub = None
        self.reader: asyncio.Task | None = None

    async def publish(self, job_id: str, event: dict) -> None:
        try:
            await self.redis.publish(PROGRESS + job_id, json.dumps(event))
        except DOWN:  # progress is a courtesy; the job goes on
            log.debug("progress for %s not sent: Redis unreachable", job_id)

    def subscribe(self, job_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.queues.setdefault(job_id, []).append(q)
        if self.reader is None or self.reader.done():
            self.reader = asyncio.create_task(self._read())
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None:
        subs = self.queues.get(job_id, [])
        if q in subs:
            subs.remove(q)
        if not subs:
            self.queues.pop(job_id, None)

    async def _read(self) -> None:
        delay = 0.2
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.psubscribe(PROGRESS + "*")
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    job_id = message["channel"].decode()[len(PROGRESS) :]
                    for q in self.queues.get(job_id, []):
                        q.put_nowait(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except DOWN:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self.reader:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        await self.redis.aclose()


async def _retry(call, attempts: int = 50):
    """Run `call()` again while Redis is unreachable (a restart takes a moment), then give up."""
    for attempt in range(attempts):
        try:
            return await call()
        except DOWN:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))


class RedisJournal:
    """The bot's record of jobs in flight, so that a restarted bot still answers them, and answers once."""

    def __init__(self, url: str):
        self.redis = Redis.from_url(url)

    async def add(self, spec) -> None:
        await _retry(lambda: self.redis.hset(PENDING, spec.job_id, json.dumps(spec.to_json())))

    async def mark_kicked(self, job_id: str) -> None:
        await _retry(lambda: self.redis.hset(KICKED, job_id, 1))

    async def remove(self, job_id: str) -> None:
        await _retry(lambda: self.redis.hdel(PENDING, job_id))
        await _retry(lambda: self.redis.hdel(KICKED, job_id))

    async def claim_delivery(self, job_id: str) -> bool:
        """True for the first caller only: whoever gets it answers the user."""
        return bool(await _retry(lambda: self.redis.set(DELIVERED + job_id, 1, nx=True, ex=7 * 86400)))

    async def pending(self) -> list:
        """(spec, kicked) for every job not yet answered."""
        from bot.queue.jobs import JobSpec

        raw = await _retry(lambda: self.redis.hgetall(PENDING))
        kicked = await _retry(lambda: self.redis.hgetall(KICKED))
        return [(JobSpec.from_json(json.loads(v)), k in kicked) for k, v in raw.items()]

    async def close(self) -> None:
        await self.redis.aclose()


async def queue_depth(redis: Redis) -> int:
    """Jobs in the stream that no worker has finished: not yet read plus read and unacknowledged."""
    groups = await redis.xinfo_groups(STREAM)
    for g in groups:
        if g.get("name") in (GROUP, GROUP.encode()):
            return int(g.get("lag") or 0) + int(g.get("pending") or 0)
    return int(await redis.xlen(STREAM))


async def workers_online(redis: Redis, within: float = 15.0) -> list[str]:
    import time

    beats = await redis.hgetall(WORKERS)
    now = time.time()
    return sorted(k.decode() for k, v in beats.items() if now - float(v) < within)
