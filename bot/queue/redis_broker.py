"""Redis mode: the streams broker, progress over pub/sub, and the bot's record of jobs in flight.

Why a subclass of taskiq-redis's stream broker: its listener reclaims a dead consumer's messages only
after new messages arrive, and a dropped connection (Redis restarted, its group gone) ends its generator.
Ours keeps every message it has read alive until it is acknowledged (so only a silent worker's jobs are
reclaimed), reclaims on every poll, counts starts, runs a job its worker died running alone (so a
second death is blamed on it, not on its batch) and sets a job aside after `MAX_DELIVERIES` starts,
recreates its group when Redis comes back empty, and deletes a job's entry (with the user's token and
seed) once it is done. It uses only taskiq-redis's public attributes; `pyproject.toml` pins the versions
it is tested with.

Connection failures are retried by redis-py's own `Retry` with exponential backoff, set on every client.
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
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import AckableMessage, TaskiqResult
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from bot.aio import cancel_and_wait
from bot.errors import BadOption
from bot.queue.jobs import JobResult, JobSpec
from bot.queue.scheduler import LocalProgress

log = logging.getLogger(__name__)

STREAM = "etude:jobs"
GROUP = "etude-workers"
PENDING = "etude:pending"  # hash job_id -> job spec JSON, kept by the bot until the user is answered
KICKED = "etude:kicked"  # hash job_id -> 1 once the job is in the stream
DELIVERED = "etude:delivered:"  # marker set once a job's user has the answer: nobody answers it again
PROGRESS = "etude:progress:"
WORKERS = "etude:workers"  # hash worker name -> last heartbeat (epoch seconds)
SET_ASIDE = "etude:set-aside"  # stream of poison jobs for an operator (no token)
STARTS = "etude:starts"  # hash job_id -> times a worker started it; gone when the job is acknowledged
MAX_DELIVERIES = 3  # a job started by this many workers that all died is answered and set aside
DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
POISON_MESSAGE = (
    "this piece stopped the composer {n} times, so it was set aside; please try other options or another seed"
)


def retry(attempts: int = 30) -> Retry:
    """redis-py's retry with exponential backoff (0.1 s doubling to 2 s): about a minute for 30 tries."""
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), attempts)


def client(url: str, attempts: int = 30) -> Redis:
    """A Redis client that waits out a restart of Redis (connection errors are retried with backoff)."""
    return Redis.from_url(
        url, retry=retry(attempts), retry_on_error=[RedisConnectionError, RedisTimeoutError]
    )


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
        await self.redis.set(DELIVERED + job_id, 1, ex=7 * 86400)

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
