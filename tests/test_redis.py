"""Redis mode with a real redis-server and real `etude worker` processes: nothing is lost.

The processes are tests/processes.py's, and their fixtures (`redis_server`, `workers`, `client`) conftest.py's.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from processes import RECLAIM, run_all, settled

from bot.options import Options
from bot.queue.jobs import JobSpec
from bot.queue.redis_state import RedisProgress

if TYPE_CHECKING:
    from fakediscord import FakeDiscord

    from bot.chat.client import EtudeBot
    from bot.settings import Settings

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


def spec(i: int, length: int = 120) -> JobSpec:
    return JobSpec(options=asdict(Options(length=length, rng_seed=1000 + i, tempo=200)), user_id=i)


def midi_of(result) -> bytes:
    return next(f.data for f in result.files if f.name.endswith(".mid"))


def bot_settings(fake: FakeDiscord, redis_url: str, model_dir: Path, state_dir: Path) -> Settings:
    """A bot's settings in Redis mode, talking to the fake Discord."""
    from bot.settings import Settings

    return Settings(
        _env_file=None,
        discord_token=fake.token,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        redis_url=redis_url,
        model_dir=str(model_dir),
        state_dir=str(state_dir),
        reclaim_seconds=RECLAIM,
    )


async def start_bot(settings: Settings, token: str) -> tuple[EtudeBot, asyncio.Task]:
    """A bot, once ready, and the task that runs it."""
    from bot.chat.client import EtudeBot

    bot = EtudeBot(settings, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start(token))
    await asyncio.wait_for(bot.wait_until_ready(), 30)
    return bot, task


async def test_a_killed_worker_loses_no_job(workers, client, capsys):
    workers.start("a")
    workers.start("b")
    workers.wait_healthy()
    pids = {workers.pid("a"): "a", workers.pid("b"): "b"}
    started_on: dict[str, str] = {}
    killed = asyncio.Event()
    kill_time = 0.0

    async def on_event(s, e):
        nonlocal kill_time
        if e.get("stage") == "started":
            started_on.setdefault(s.job_id, pids.get(int(e["worker"].rsplit(":", 1)[1]), "?"))
        if e.get("stage") == "composing" and started_on.get(s.job_id) == "a" and not killed.is_set():
            os.kill(workers.pid("a"), signal.SIGKILL)
            kill_time = time.monotonic()
            killed.set()

    specs = [spec(i) for i in range(20)]
    finished: dict[str, float] = {}
    results = await run_all(client, specs, on_event, finished)
    assert killed.is_set()
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.job_id for r in results}) == 20
    # Every job is answered once: the journal hands out one delivery per job.
    claims = [await client.claim_delivery(r.job_id) for r in results]
    again = [await client.claim_delivery(r.job_id) for r in results]
    assert all(claims) and not any(again)
    moved = [
        r for r in results if started_on.get(r.job_id) == "a" and r.worker.endswith(str(workers.pid("b")))
    ]
    assert moved, "no job of the killed worker was finished by the other"
    with capsys.disabled():
        recovered = max(finished[r.job_id] for r in moved) - kill_time
        print(
            f"\nworker killed mid-job: its {len(moved)} job(s) finished on the other worker "
            f"{recovered:.1f} s after the kill (RECLAIM_SECONDS={RECLAIM:g})"
        )


async def test_redis_restart_mid_run(workers, client, redis_server):
    workers.start("a")
    workers.wait_healthy()
    specs = [spec(i, length=200) for i in range(100, 110)]
    restarted = asyncio.Event()

    async def on_event(s, e):
        if e.get("stage") == "rendering" and not restarted.is_set():
            restarted.set()
            await asyncio.to_thread(redis_server.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(redis_server.start)

    results = await run_all(client, specs, on_event)
    assert restarted.is_set()
    assert all(r.ok for r in results), [r.error for r in results]
    assert len({r.job_id for r in results}) == 10


async def test_sigterm_finishes_the_batch_then_exits(workers, client):
    workers.start("a")
    workers.wait_healthy()
    specs = [spec(i, length=150) for i in range(200, 206)]
    sent = asyncio.Event()
    started_on_a: set[str] = set()
    pid_a = workers.pid("a")

    async def on_event(s, e):
        if e.get("stage") == "started" and e["worker"].endswith(f":{pid_a}"):
            started_on_a.add(s.job_id)
        if e.get("stage") == "composing" and not sent.is_set():
            sent.set()
            workers.procs["a"].send_signal(signal.SIGTERM)
            workers.start("b")  # takes what the stopping worker no longer will

    results = await run_all(client, specs, on_event)
    assert sent.is_set() and all(r.ok for r in results), [r.error for r in results]
    assert await asyncio.to_thread(workers.procs["a"].wait, 60) == 0
    # What the stopping worker had started, it finished itself.
    assert started_on_a and all(r.worker.endswith(f":{pid_a}") for r in results if r.job_id in started_on_a)


async def test_batched_equals_single_and_metrics_count(workers, client):
    workers.start("a")
    workers.wait_healthy()
    (alone,) = await run_all(client, [spec(300)])
    crowd = [
        spec(301),
        spec(302),
        JobSpec(options=asdict(Options(length=120, rng_seed=1300, tempo=200)), user_id=9),
        spec(303),
    ]
    together = await run_all(client, crowd)
    assert midi_of(alone) == midi_of(together[2])
    metrics = workers.metrics("a")
    assert 'etude_jobs_total{outcome="ok"} 5.0' in metrics
    batches = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("etude_batch_size_count"))
    )
    assert batches < 5  # the crowd came in fewer batches than jobs
    assert "etude_job_latency_seconds_count 5.0" in metrics


async def test_bot_restart_still_answers_queued_jobs(workers, redis_server, tiny_model_dir, tmp_path):
    """Jobs queued when the bot stops are answered by the next bot: a follow-up, or in the channel once the
    interaction has expired; each exactly once."""
    from fakediscord import FakeDiscord

    from bot.chat.client import EtudeBot
    from bot.chat.endpoints import apply_endpoints, current_endpoints
    from bot.queue.redis_keys import PENDING
    from bot.queue.redis_state import RedisJournal
    from bot.settings import Settings

    saved = current_endpoints()
    async with FakeDiscord() as fake:
        apply_endpoints(fake.api_base, fake.gateway_url)
        settings = Settings(
            _env_file=None,
            discord_token=fake.token,
            discord_api_base=fake.api_base,
            discord_gateway_url=fake.gateway_url,
            redis_url=redis_server.url,
            model_dir=str(tiny_model_dir),
            state_dir=str(tmp_path),
            reclaim_seconds=RECLAIM,
        )

        async def start_bot() -> tuple[EtudeBot, asyncio.Task]:
            bot = EtudeBot(settings, guild_ready_timeout=0.05)
            task = asyncio.create_task(bot.start(fake.token))
            await asyncio.wait_for(bot.wait_until_ready(), 30)
            return bot, task

        bot, task = await start_bot()
        inters = [
            await fake.send_command("compose", {"length": 30, "rng_seed": i}, user=fake.user(i))
            for i in range(3)
        ]
        for inter in inters:
            await inter.wait_for_callback(timeout=10)
        journal = RedisJournal(redis_server.url)
        for _ in range(100):  # no worker yet: the jobs wait in Redis
            if await journal.redis.hlen(PENDING) == 3:
                break
            await asyncio.sleep(0.1)
        assert await journal.redis.hlen(PENDING) == 3
        await bot.close()
        await asyncio.wait_for(task, 10)

        inters[2].expire()  # this one's 15 minutes are over by the time it is done
        workers.start("a")
        bot, task = await start_bot()
        try:
            for inter in inters[:2]:
                reply = await inter.wait_for_followup(timeout=120)
                assert {f["filename"].rsplit(".", 1)[1] for f in reply["files"]} == {
                    "mid",
                    "ogg",
                    "wav",
                    "png",
                }
            posted = await fake.wait_for(lambda e: e["kind"] == "channel_message" and e["status"] < 300, 120)
            assert f"<@{fake.user(2)['user']['id']}>" in posted["body"]["content"]
            await settled(bot.runtime.scheduler)
        finally:
            await bot.close()
            await asyncio.wait_for(task, 10)
            await journal.close()
            apply_endpoints(*saved)
        # The queue was quiescent and the bot is closed: nothing more can arrive.
        assert [len(i.followups) for i in inters[:2]] == [1, 1]
        assert sum(e["kind"] == "channel_message" for e in fake.log) == 1


async def test_a_job_journaled_but_never_queued_is_queued_on_recovery(workers, client):
    """A bot that stopped between writing its journal and queueing the job still gets it done."""
    workers.start("a")
    workers.wait_healthy()
    lost = spec(400)
    await client.journal.add(lost)
    assert [(s.job_id, kicked) for s, kicked in await client.journal.pending()] == [(lost.job_id, False)]
    result = await client.recover(lost, kicked=False)
    assert result.ok and result.job_id == lost.job_id
    assert [kicked for _, kicked in await client.journal.pending()] == [True]
    await client.journal.remove(lost.job_id)
    assert await client.journal.pending() == []


async def test_a_piece_discord_refused_until_the_bot_stopped_is_delivered_by_the_next(
    workers, redis_server, tiny_model_dir, tmp_path
):
    """The piece is kept until its user has it: a bot closed while Discord answers 500 to every follow-up
    leaves the job and its result in Redis, and the next bot sends it, once."""
    from fakediscord import FakeDiscord

    from bot.chat.endpoints import apply_endpoints, current_endpoints
    from bot.queue.redis_keys import PENDING, RESULT
    from bot.queue.redis_state import RedisJournal

    workers.start("a")
    workers.wait_healthy()
    saved = current_endpoints()
    journal = RedisJournal(redis_server.url)
    async with FakeDiscord() as fake:
        apply_endpoints(fake.api_base, fake.gateway_url)
        settings = bot_settings(fake, redis_server.url, tiny_model_dir, tmp_path)
        try:
            bot, task = await start_bot(settings, fake.token)
            fake.fail_next("POST /api/v10/webhooks/", 500, count=10**6)
            inter = await fake.send_command("compose", {"length": 30, "rng_seed": 7}, user=fake.user(7))
            await inter.wait_for_callback(timeout=10)
            refused = await inter.wait_for(lambda e: e["kind"] == "followup" and e["status"] == 500, 120)
            assert refused["injected"]
            (job_id,) = [k.decode() for k in await journal.redis.hkeys(PENDING)]
            await asyncio.wait_for(bot.close(), 30)
            await asyncio.wait_for(task, 10)
            assert await journal.redis.exists(RESULT + job_id), "the finished piece was not kept"
            assert inter.followups == []

            fake.heal()
            bot, task = await start_bot(settings, fake.token)
            reply = await inter.wait_for_followup(timeout=120)
            assert {f["filename"].rsplit(".", 1)[1] for f in reply["files"]} >= {"mid", "ogg"}
            await settled(bot.runtime.scheduler)  # tidied once answered: the journal entry and the result go
            assert await journal.redis.hlen(PENDING) == 0 and not await journal.redis.exists(RESULT + job_id)
        finally:
            await asyncio.wait_for(bot.close(), 30)
            await asyncio.wait_for(task, 10)
            await journal.close()
            apply_endpoints(*saved)
        assert len(inter.followups) == 1


async def test_progress_published_once_ready_returns_is_heard(redis_server):
    """Redis pub/sub keeps nothing for a late subscriber: the scheduler kicks a job only once the bot's
    subscription is live, so the job's first event ("started") is never lost."""
    bot_side, worker_side = RedisProgress(redis_server.url), RedisProgress(redis_server.url)
    try:
        await worker_side.redis.ping()  # connected: its publish is one round trip, sooner than a subscription
        events = bot_side.subscribe("job-1")
        await bot_side.ready()
        await worker_side.publish("job-1", {"stage": "started"})
        assert await asyncio.wait_for(events.get(), 10) == {"stage": "started"}
    finally:
        await bot_side.close()
        await worker_side.close()


async def test_delivered_markers_are_kept_as_long_as_the_embedded_journal_keeps_them(redis_server, tmp_path):
    """One retention for "this job was answered", whichever mode keeps the marker."""
    import sqlite3
    import time

    from bot.queue.jobs import KEEP_DELIVERED_SECONDS
    from bot.queue.journal import SQLiteJournal
    from bot.queue.redis_keys import DELIVERED
    from bot.queue.redis_state import RedisJournal

    journal = RedisJournal(redis_server.url)
    try:
        await journal.mark_delivered("job-1")
        ttl = await journal.redis.ttl(DELIVERED + "job-1")
        assert KEEP_DELIVERED_SECONDS - 60 < ttl <= KEEP_DELIVERED_SECONDS
    finally:
        await journal.close()
    path = tmp_path / "journal.sqlite"
    embedded = SQLiteJournal(path)
    await embedded.mark_delivered("job-1")
    await embedded.mark_delivered("job-2")
    assert await embedded.delivered("job-1")
    with sqlite3.connect(path) as db:  # job-1 answered just longer ago than the retention
        db.execute(
            "UPDATE jobs SET at = ? WHERE job_id = 'job-1'", (time.time() - KEEP_DELIVERED_SECONDS - 5,)
        )
    again = SQLiteJournal(path)
    assert not await again.delivered("job-1") and await again.delivered("job-2")


async def test_a_stored_result_is_its_files_raw_bytes_and_expires(redis_server, capsys):
    """A result in Redis is a hash of a JSON description and each file's bytes as they are (no base64), with
    a time to live, and `forget` deletes it. Also prints what a queued and a finished job cost in Redis."""
    from bot.queue.jobs import RESULT_TTL_SECONDS, JobResult, ResultFile
    from bot.queue.redis_keys import RESULT, STREAM
    from bot.queue.results import RedisResults
    from bot.queue.streams import JobStream

    results, stream = RedisResults(redis_server.url), JobStream(redis_server.url)
    try:
        # A 500-note reply's files, at the sizes `etude compose --length 500 --rng-seed 1` wrote.
        sizes = {"etude.mid": 14_454, "etude.ogg": 3_703_356, "etude.wav": 10_258_562, "etude.png": 52_404}
        noise = os.urandom(max(sizes.values()))
        files = [ResultFile(name, noise[:n], "application/octet-stream") for name, n in sizes.items()]
        done = JobResult("job-raw", True, files=files, info={"length": 500})
        await results.put(done)
        redis = results.redis
        key = RESULT + "job-raw"
        assert await redis.hget(key, "file:2") == files[2].data  # the bytes themselves
        assert 0 < await redis.ttl(key) <= RESULT_TTL_SECONDS
        assert await results.get("job-raw") == done
        stored = await redis.memory_usage(key, samples=0)
        raw = sum(sizes.values())
        # The same result as one base64 JSON string, as it was stored before.
        await redis.set("etude:test:b64", json.dumps(done.to_json()))
        as_b64 = await redis.memory_usage("etude:test:b64", samples=0)
        await redis.delete("etude:test:b64")
        # The bytes plus the allocator's rounding (jemalloc's size classes); base64 alone adds a third.
        assert stored < raw * 1.1 < as_b64
        await results.forget("job-raw")
        assert not await redis.exists(key) and await results.get("job-raw") is None

        await redis.delete(STREAM)
        await stream.start()
        jobs = 200
        for i in range(jobs):
            job = spec(i, length=500)
            job.interaction_token = "t" * 200  # Discord's interaction tokens are about this long
            await stream.submit(job.job_id, job.to_json())
        queued = await redis.memory_usage(STREAM, samples=0) / jobs
        await redis.set("etude:delivered:" + "0" * 32, 1, ex=86400)  # what an answered job leaves
        marker = await redis.memory_usage("etude:delivered:" + "0" * 32, samples=0)
        await redis.delete("etude:delivered:" + "0" * 32)
        with capsys.disabled():
            print(
                f"\nRedis memory: {queued:.0f} B per queued job (no seed), a finished 500-note job "
                f"{stored / 2**20:.2f} MiB for {raw / 2**20:.2f} MiB of files (as base64 JSON: "
                f"{as_b64 / 2**20:.2f} MiB), an answered job {marker} B"
            )
    finally:
        await results.redis.delete(STREAM)
        await stream.close()
        await results.close()
