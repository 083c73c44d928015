"""Redis mode's queue: one Redis stream read by the workers as one consumer group, owned here in full.

The protocol, in the order a job meets it:

- **Submit.** The bot XADDs one entry to `etude:jobs`: `data` = JSON `{"job_id", "spec"}`. The job id is
  the bot's, so a job submitted twice (a bot that queues again what Redis lost) has one result.
- **Read.** A worker XREADGROUPs new entries (`>`) as consumer `<host>:<pid>` of group `etude-workers`,
  at most `fetch` at a time, and holds each until it acknowledges it.
- **Keep alive.** A thread with its own connection XCLAIMs (JUSTID, `min-idle-time` 0) every entry the
  worker holds, every third of `RECLAIM_SECONDS`, so an entry's idle time stays low while its worker
  lives, even with a busy event loop. Only entries XPENDING still lists as this consumer's are touched.
- **Reclaim.** On every poll, whether or not the read returned anything, the worker XAUTOCLAIMs entries
  idle for `RECLAIM_SECONDS`: only a silent (dead or frozen) worker's entries are that idle.
- **Count starts.** Each time a worker starts a job it increments the job's count in the hash
  `etude:starts` (starts, not deliveries: a job its dead worker only held, waiting for a free slot, is not
  to blame). A reclaimed job that was started before runs alone: the worker waits until nothing else
  runs, runs it, and waits until it is done, so a second death is that job's strike only.
- **Set aside.** A reclaimed job already started `MAX_DELIVERIES` times is copied, without the user's
  token, to the stream `etude:set-aside`, then answered with `POISON_MESSAGE` (a result like any other),
  then acknowledged: whoever reads the answer finds the copy.
- **Acknowledge.** Only once the job's result is stored: XACK + XDEL + HDEL of its start count, in one
  transaction, so the stream holds only live jobs and a finished job's token and seed leave Redis.
- **Hand back.** A stopping worker re-adds every entry it holds at the end of the stream and acknowledges
  the old ones, in one transaction, and clears their start counts (stopped, not killed: no strike).
- **Survive Redis.** Connection errors are retried with backoff; a group lost with Redis's data (NOGROUP)
  is created again, and the bot queues again every job it still waits for (`Scheduler._still_queued`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.queue.interfaces import Delivery, Results
from bot.queue.jobs import JobResult, JobSpec
from bot.queue.redis_keys import DOWN, GROUP, SET_ASIDE, STARTS, STREAM, retry

log = logging.getLogger(__name__)

MAX_DELIVERIES = 3  # a job started by this many workers that all died is answered and set aside
POISON_MESSAGE = (
    "this piece stopped the composer {n} times, so it was set aside; please try other options or another seed"
)


def _decode(data: bytes) -> tuple[str, dict] | None:
    """(job id, spec) of a stream entry, or None for an entry this protocol did not write."""
    try:
        message = json.loads(data)
        return str(message["job_id"]), dict(message["spec"])
    except (ValueError, KeyError, TypeError):
        return None


class JobStream:
    """The job stream: `submit` for the bot; `jobs`, `ack`, `release` and `hand_back` for a worker."""

    def __init__(
        self,
        url: str,
        *,
        results: Results | None = None,
        consumer: str | None = None,
        reclaim_seconds: float = 15.0,
        fetch: int = 8,
        block_ms: int = 1000,
    ):
        self.url = url
        self.results = results  # where a poison job's answer goes
        self.consumer = consumer or uuid.uuid4().hex
        self.reclaim_ms = int(reclaim_seconds * 1000)
        self.fetch, self.block_ms = fetch, block_ms
        self.redis = Redis.from_url(
            url, retry=retry(30), retry_on_error=[RedisConnectionError, RedisTimeoutError]
        )
        # Every entry read and not yet acknowledged, whether it runs now or waits its turn in this process.
        self.inflight: dict[bytes, bytes] = {}
        self.handed: set[bytes] = set()  # of those, the ones handed to the runner: running
        self.idle = asyncio.Event()  # set while nothing is handed
        self.idle.set()
        self.toucher: threading.Thread | None = None
        self.touching = threading.Event()  # set: the keep-alive thread stops

    # -- the bot's side ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._ensure_group()

    async def submit(self, job_id: str, spec: dict) -> None:
        await self.redis.xadd(STREAM, {b"data": json.dumps({"job_id": job_id, "spec": spec})})

    async def close(self) -> None:
        if self.toucher:
            self.touching.set()
            await asyncio.to_thread(self.toucher.join, 10)
        await self.redis.aclose()

    # -- the worker's side ------------------------------------------------------------------------------------
    async def jobs(self) -> AsyncIterator[Delivery]:
        """New entries and reclaimed ones, forever; Redis away or emptied is waited out, not raised."""
        if self.toucher is None or not self.toucher.is_alive():
            self.touching.clear()
            self.toucher = threading.Thread(target=self._touch, name="etude-keepalive", daemon=True)
            self.toucher.start()
        delay = 0.2
        while True:
            try:
                await self._ensure_group()
                while True:
                    fetched = await self.redis.xreadgroup(
                        GROUP, self.consumer, {STREAM: ">"}, block=self.block_ms, count=self.fetch
                    )
                    delay = 0.2
                    batch = [(i, m) for _s, entries in fetched or [] for i, m in entries]
                    # In flight from the moment they are read: an entry waiting here for a free slot is kept
                    # alive like the one that runs.
                    self.inflight.update({i: m[b"data"] for i, m in batch if m})
                    for msg_id, msg in batch:
                        if job := await self._take(msg_id, msg[b"data"]):
                            yield job
                    async for job in self._reclaim():
                        yield job
            except ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                log.warning("the consumer group is gone (Redis restarted without its data): recreating it")
            except DOWN as e:
                log.warning("Redis unreachable (%s); retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ack(self, job: Delivery) -> None:
        msg_id = job.ref
        try:
            # Acknowledge and delete together: the stream keeps only live jobs, and a finished job's token
            # and seed leave Redis with it.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(STREAM, GROUP, msg_id).xdel(STREAM, msg_id).hdel(STARTS, job.job_id)
                await pipe.execute()
        except ResponseError as e:  # the group vanished with a Redis that lost its data: nothing to ack
            log.warning("acknowledging %s: %s", msg_id, e)
        finally:
            self._drop(msg_id)

    async def release(self, job: Delivery) -> None:
        """No longer kept alive: the entry is reclaimed once idle for `RECLAIM_SECONDS`, and runs again."""
        log.warning("job %s released unacknowledged: it will run again", job.job_id)
        self._drop(job.ref)

    async def hand_back(self) -> int:
        held = dict(self.inflight)
        if not held:
            return 0
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for msg_id, data in held.items():
                    pipe.xadd(STREAM, {b"data": data})
                    pipe.xack(STREAM, GROUP, msg_id).xdel(STREAM, msg_id)
                    if decoded := _decode(data):  # stopped, not killed: no strike against the job
                        pipe.hdel(STARTS, decoded[0])
                await pipe.execute()
        except (ResponseError, *DOWN) as e:  # they will be reclaimed once their idle time runs out
            log.warning("could not hand back %d jobs: %s", len(held), e)
            return 0
        self.inflight.clear()
        return len(held)

    # -- the protocol's steps ---------------------------------------------------------------------------------
    def _drop(self, msg_id) -> None:
        self.inflight.pop(msg_id, None)
        self.handed.discard(msg_id)
        if not self.handed:
            self.idle.set()

    async def _take(self, msg_id: bytes, data: bytes) -> Delivery | None:
        """The entry as a job to run, counted as a start (the runner runs what it is handed)."""
        decoded = _decode(data)
        if decoded is None:  # nobody can be answered for it: it goes
            log.error("stream entry %s is not a job; deleted", msg_id)
            await self.redis.xack(STREAM, GROUP, msg_id)
            await self.redis.xdel(STREAM, msg_id)
            self.inflight.pop(msg_id, None)
            return None
        job_id, spec = decoded
        await self.redis.hincrby(STARTS, job_id, 1)
        self.handed.add(msg_id)
        self.idle.clear()
        return Delivery(job_id, spec, msg_id)

    async def _reclaim(self) -> AsyncIterator[Delivery]:
        """Entries left unacknowledged by a worker that went silent go to whoever polls next."""
        _next, claimed, *_ = await self.redis.xautoclaim(
            STREAM, GROUP, self.consumer, min_idle_time=self.reclaim_ms, count=self.fetch
        )
        taken, starts_of = [], {}
        for msg_id, msg in claimed:
            if not msg:  # deleted from the stream already: only its pending entry was left
                await self.redis.xack(STREAM, GROUP, msg_id)
                continue
            decoded = _decode(msg[b"data"])
            job_id = decoded[0] if decoded else None
            starts = int(await self.redis.hget(STARTS, job_id) or 0) if job_id else 0
            if decoded and starts >= MAX_DELIVERIES:
                await self._set_aside(msg_id, *decoded, starts)
                continue
            log.warning("reclaimed job %s from a silent worker (started %d times)", job_id, starts)
            taken.append((msg_id, msg[b"data"]))
            starts_of[msg_id] = starts
        # All in flight before the first is handed on: the rest may wait here for a free slot.
        self.inflight.update(dict(taken))
        for msg_id, data in taken:
            if not starts_of[msg_id]:  # never started: its worker died before it was its turn
                if job := await self._take(msg_id, data):
                    yield job
                continue
            # A job that was running when its worker died runs alone: if it kills this worker too, the
            # strike is its own and not shared with jobs that happened to be in its batch, so only a job
            # that really takes workers down reaches MAX_DELIVERIES.
            await self.idle.wait()
            if job := await self._take(msg_id, data):
                log.info("running job %s alone", job.job_id)
                yield job
                await self.idle.wait()

    async def _set_aside(self, msg_id: bytes, job_id: str, spec_json: dict, deaths: int) -> None:
        """Answer a poison job with a clear message and keep it, without the user's token, for an operator."""
        log.error("job %s took down %d workers: set aside in %s", job_id, deaths, SET_ASIDE)
        spec = JobSpec.from_json(spec_json)
        spec.interaction_token = None
        kept = {"job_id": job_id, "deaths": deaths, "at": time.time(), "spec": json.dumps(spec.to_json())}
        # Kept before it is answered (whoever reads the answer finds it set aside), answered before it
        # leaves the stream (a worker that dies in between leaves it to be set aside again, not lost).
        await self.redis.xadd(SET_ASIDE, kept, maxlen=1000, approximate=True)
        result = JobResult(job_id, False, error=POISON_MESSAGE.format(n=deaths), info={"set_aside": True})
        if self.results is not None:
            await self.results.put(result)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, msg_id).xdel(STREAM, msg_id).hdel(STARTS, job_id)
            await pipe.execute()
        self.inflight.pop(msg_id, None)

    def _touch(self) -> None:
        """Reset the idle time of every entry this worker holds, so only a silent worker loses them.

        A thread with its own connection, not a task: a busy event loop (a machine short of CPU) must not
        let this worker's jobs look abandoned.
        """
        conn = SyncRedis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            while not self.touching.wait(self.reclaim_ms / 3000):
                held = list(self.inflight)
                if not held:
                    continue
                try:
                    # Only what is still ours: an entry taken over while this worker was silent stays taken.
                    pending = conn.xpending_range(
                        STREAM, GROUP, "-", "+", len(held) + 64, consumername=self.consumer
                    )
                    ours = [p["message_id"] for p in pending if p["message_id"] in self.inflight]
                    if ours:  # JUSTID: the delivery count stays as it is; only the idle time is reset.
                        conn.xclaim(
                            STREAM, GROUP, self.consumer, min_idle_time=0, message_ids=ours, justid=True
                        )
                except Exception as e:  # Redis away or the group gone: the next round tries again
                    log.debug("keeping jobs alive failed: %s", e)
        finally:
            conn.close()

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as e:  # BUSYGROUP: it exists already
            if "BUSYGROUP" not in str(e):
                raise
