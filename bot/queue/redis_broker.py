"""Redis mode's queue: the streams broker the workers consume and the store of their results.

Why a subclass of taskiq-redis's stream broker: its listener reclaims a dead consumer's messages only
after new messages arrive, and a dropped connection (Redis restarted, its group gone) ends its generator.
Ours keeps every message it has read alive until it is acknowledged (so only a silent worker's jobs are
reclaimed), reclaims on every poll, counts starts, runs a job its worker died running alone (so a
second death is blamed on it, not on its batch) and sets a job aside after `MAX_DELIVERIES` starts,
recreates its group when Redis comes back empty, and deletes a job's entry (with the user's token and
seed) once it is done. It uses only taskiq-redis's public attributes; `pyproject.toml` pins the versions
it is tested with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncGenerator

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, TaskiqResult
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from bot.queue.jobs import JobResult, JobSpec
from bot.queue.redis_keys import DOWN, GROUP, SET_ASIDE, STARTS, STREAM, retry

log = logging.getLogger(__name__)

MAX_DELIVERIES = 3  # a job started by this many workers that all died is answered and set aside
POISON_MESSAGE = (
    "this piece stopped the composer {n} times, so it was set aside; please try other options or another seed"
)


def _job_id(data: bytes) -> str | None:
    try:
        return json.loads(data)["task_id"]
    except (ValueError, KeyError, TypeError):
        return None


class EtudeStreamBroker(RedisStreamBroker):
    """A Redis streams broker that never robs a live worker and survives restarts of Redis."""

    def __init__(self, url: str, *, reclaim_seconds: float = 15.0, fetch: int = 8, **kw):
        super().__init__(
            url,
            queue_name=STREAM,
            consumer_group_name=GROUP,
            xread_block=1000,
            idle_timeout=int(reclaim_seconds * 1000),
            xread_count=fetch,
            retry=retry(30),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            **kw,
        )
        # Every message read and not yet acknowledged, whether it runs now or waits its turn in this process.
        self.inflight: dict[bytes, bytes] = {}
        self.handed: set[bytes] = set()  # of those, the ones handed to the receiver: running
        self.idle = asyncio.Event()  # set while nothing is handed
        self.idle.set()
        self.url = url
        self.toucher: threading.Thread | None = None
        self.touching = threading.Event()  # set: the keep-alive thread stops

    def _redis(self) -> Redis:
        return Redis(connection_pool=self.connection_pool)

    def _acker(self, msg_id: bytes, job_id: str | None):
        async def ack() -> None:
            try:
                async with self._redis() as conn:
                    # Acknowledge and delete together: the stream keeps only live jobs, and a finished job's
                    # token and seed leave Redis with it.
                    async with conn.pipeline(transaction=True) as pipe:
                        pipe.xack(STREAM, GROUP, msg_id).xdel(STREAM, msg_id)
                        if job_id:
                            pipe.hdel(STARTS, job_id)
                        await pipe.execute()
            except ResponseError as e:  # the group vanished with a Redis that lost its data: nothing to ack
                log.warning("acknowledging %s: %s", msg_id, e)
            finally:
                self.inflight.pop(msg_id, None)
                self.handed.discard(msg_id)
                if not self.handed:
                    self.idle.set()

        return ack

    def _touch(self) -> None:
        """Reset the idle time of every message this worker holds, so only a silent worker loses them.

        A thread with its own connection, not a task: a busy event loop (a machine short of CPU) must not
        let this worker's jobs look abandoned.
        """
        conn = SyncRedis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            while not self.touching.wait(self.idle_timeout / 3000):
                held = list(self.inflight)
                if not held:
                    continue
                try:
                    # Only what is still ours: a message taken over while this worker was silent stays taken.
                    pending = conn.xpending_range(
                        STREAM, GROUP, "-", "+", len(held) + 64, consumername=self.consumer_name
                    )
                    ours = [p["message_id"] for p in pending if p["message_id"] in self.inflight]
                    if ours:  # JUSTID: the delivery count stays as it is; only the idle time is reset.
                        conn.xclaim(
                            STREAM, GROUP, self.consumer_name, min_idle_time=0, message_ids=ours, justid=True
                        )
                except Exception as e:  # Redis away or the group gone: the next round tries again
                    log.debug("keeping jobs alive failed: %s", e)
        finally:
            conn.close()

    async def kick(self, message) -> None:
        async with self._redis() as conn:
            await conn.xadd(STREAM, {b"data": message.message})

    async def _take(self, conn: Redis, msg_id: bytes, msg: dict) -> AckableMessage:
        """The message as taskiq runs it; counted as a start, since the receiver runs what it is handed."""
        job_id = _job_id(msg[b"data"])
        if job_id:
            await conn.hincrby(STARTS, job_id, 1)
        self.handed.add(msg_id)
        self.idle.clear()
        return AckableMessage(data=msg[b"data"], ack=self._acker(msg_id, job_id))

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        if self.toucher is None or not self.toucher.is_alive():
            self.touching.clear()
            self.toucher = threading.Thread(target=self._touch, name="etude-keepalive", daemon=True)
            self.toucher.start()
        delay = 0.2
        while True:
            try:
                async with self._redis() as conn:
                    await self._ensure_group(conn)
                    while True:
                        fetched = await conn.xreadgroup(
                            GROUP, self.consumer_name, {STREAM: ">"}, block=self.block, count=self.count
                        )
                        delay = 0.2
                        batch = [(i, m) for _s, messages in fetched or [] for i, m in messages]
                        # In flight from the moment they are read: a message waiting here for a free slot is
                        # kept alive like the one that runs.
                        self.inflight.update({i: m[b"data"] for i, m in batch if m})
                        for msg_id, msg in batch:
                            yield await self._take(conn, msg_id, msg)
                        async for message in self._reclaim(conn):
                            yield message
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                log.warning("the consumer group is gone (Redis restarted without its data): recreating it")
            except DOWN as e:
                log.warning("Redis unreachable (%s); retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _reclaim(self, conn: Redis) -> AsyncGenerator[AckableMessage, None]:
        """Jobs left unacknowledged by a worker that went silent go to whoever polls next."""
        _next, claimed, *_ = await conn.xautoclaim(
            STREAM, GROUP, self.consumer_name, min_idle_time=self.idle_timeout, count=self.count
        )
        taken, starts_of = [], {}
        for msg_id, msg in claimed:
            if not msg:  # deleted from the stream already: only its pending entry was left
                await conn.xack(STREAM, GROUP, msg_id)
                continue
            job_id = _job_id(msg[b"data"])
            # Starts, not deliveries: a job a dead worker only held (waiting for a free slot) is not to blame.
            starts = int(await conn.hget(STARTS, job_id) or 0) if job_id else 0
            if starts >= MAX_DELIVERIES:
                await self._set_aside(conn, msg_id, msg[b"data"], starts)
                continue
            log.warning("reclaimed job %s from a silent worker (started %d times)", job_id, starts)
            taken.append((msg_id, msg))
            starts_of[msg_id] = starts
        # All in flight before the first is handed on: the rest may wait here for a free slot.
        self.inflight.update({i: m[b"data"] for i, m in taken})
        for msg_id, msg in taken:
            if not starts_of[msg_id]:  # never started: its worker died before it was its turn
                yield await self._take(conn, msg_id, msg)
                continue
            # A job that was running when its worker died runs alone: if it kills this worker too, the
            # strike is its own and not shared with jobs that happened to be in its batch, so only a job
            # that really takes workers down reaches MAX_DELIVERIES.
            await self.idle.wait()
            log.info("running job %s alone", _job_id(msg[b"data"]))
            yield await self._take(conn, msg_id, msg)
            await self.idle.wait()

    async def _set_aside(self, conn: Redis, msg_id: bytes, data: bytes, deaths: int) -> None:
        """Answer a poison job with a clear message and keep it, without the user's token, for an operator."""
        message = json.loads(data)
        job_id = message["task_id"]
        spec = JobSpec.from_json(message["args"][0]) if message.get("args") else None
        log.error("job %s took down %d workers: set aside in %s", job_id, deaths, SET_ASIDE)
        result = JobResult(job_id, False, error=POISON_MESSAGE.format(n=deaths), info={"set_aside": True})
        if self.result_backend is not None:
            await self.result_backend.set_result(
                job_id,
                TaskiqResult(is_err=False, return_value=result.to_json(), execution_time=0.0, log=None),
            )
        kept = {"job_id": job_id, "deaths": deaths, "at": time.time()}
        if spec is not None:
            spec.interaction_token = None
            kept["spec"] = json.dumps(spec.to_json())
        async with conn.pipeline(transaction=True) as pipe:
            pipe.xadd(SET_ASIDE, kept, maxlen=1000, approximate=True)
            pipe.xack(STREAM, GROUP, msg_id).xdel(STREAM, msg_id).hdel(STARTS, job_id)
            await pipe.execute()

    async def hand_back(self) -> int:
        """Put every job this worker holds back at the end of the queue for the others; returns how many."""
        held = dict(self.inflight)
        if not held:
            return 0
        try:
            async with self._redis() as conn:
                async with conn.pipeline(transaction=True) as pipe:
                    for msg_id, data in held.items():
                        pipe.xadd(STREAM, {b"data": data})
                        pipe.xack(STREAM, GROUP, msg_id).xdel(STREAM, msg_id)
                        if job_id := _job_id(data):  # stopped, not killed: no strike against the job
                            pipe.hdel(STARTS, job_id)
                    await pipe.execute()
        except (ResponseError, *DOWN) as e:  # they will be reclaimed once their idle time runs out
            log.warning("could not hand back %d jobs: %s", len(held), e)
            return 0
        self.inflight.clear()
        return len(held)

    async def _ensure_group(self, conn: Redis) -> None:
        try:
            await conn.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as e:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(e):
                raise

    async def shutdown(self) -> None:
        if self.toucher:
            self.touching.set()
            await asyncio.to_thread(self.toucher.join, 10)
        await super().shutdown()

    async def startup(self) -> None:
        await super(RedisStreamBroker, self).startup()
        async with self._redis() as conn:
            await self._ensure_group(conn)


class PatientResultBackend(RedisAsyncResultBackend):
    """Stores a finished job's result even if Redis is restarting at that moment, rather than redo the job.

    A result is kept until `forget()` once its user has it, not deleted when read: a bot that stops while
    Discord is refusing the piece finds it again after the restart. It expires after `result_ex_time`.
    """

    def __init__(self, url: str, result_ex_time: int):
        super().__init__(
            url,
            keep_results=True,
            result_ex_time=result_ex_time,
            retry=retry(300),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_timeout=60,  # a result is megabytes: give a busy machine time to read it
        )

    async def forget(self, task_id: str) -> None:
        async with Redis(connection_pool=self.redis_pool) as conn:
            await conn.delete(self._task_name(task_id))


def make_redis_broker(
    url: str,
    reclaim_seconds: float = 15.0,
    fetch: int = 8,
    result_ttl: int = 3600,
    consumer: str | None = None,
):
    """The broker and its result store; `consumer` names this worker in the group (XINFO, XPENDING)."""
    backend = PatientResultBackend(url, result_ex_time=result_ttl)
    broker = EtudeStreamBroker(url, reclaim_seconds=reclaim_seconds, fetch=fetch, consumer_name=consumer)
    return broker.with_result_backend(backend)
