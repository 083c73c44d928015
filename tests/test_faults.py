"""Faults with real processes: a real redis-server, `python -m bot worker` processes, the bot's queue side.

Nothing lost, nothing twice, nobody left waiting: live workers are never robbed, a poison job is set aside,
a killed worker leaves nothing running and nothing on disk, Redis may be down, refuse us, or come back
empty. Short RECLAIM and deadline settings keep the file quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
from processes import RedisServer, Workers, close, drained, free_port, run_all, scheduler_for

from bot.options import Options
from bot.queue.jobs import JobSpec
from bot.queue.redis_keys import RESULT, SET_ASIDE, STREAM

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


def spec(i: int, length: int = 120) -> JobSpec:
    return JobSpec(
        options=asdict(Options(length=length, rng_seed=5000 + i, tempo=200)),
        user_id=i,
        interaction_token=f"token-{i}",
    )


def render_processes_of(pid: int) -> list[int]:
    """The render pool's processes (`python -m bot.render.pool`) started by the worker `pid`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"bot.render.pool" in cmd and ppid == pid:
            found.append(int(entry.name))
    return found


async def test_live_workers_are_never_robbed_and_finished_jobs_leave_redis(workers, client):
    """Two busy workers with a short RECLAIM_SECONDS: every job runs once, and the stream ends empty."""
    for name in ("a", "b"):
        workers.start(name, BATCH_SIZE="4", RECLAIM_SECONDS="4")
    workers.wait_healthy(timeout=600)
    runs: dict[str, set[str]] = {}

    async def on_event(s, e):
        if e.get("stage") == "started":
            runs.setdefault(s.job_id, set()).add(e["worker"])

    specs = [spec(i, length=300) for i in range(12)]
    results = await run_all(client, specs, on_event)
    assert all(r.ok for r in results), [r.error for r in results]
    assert all(len(runs[s.job_id]) == 1 for s in specs), runs  # no job ran on two workers
    logs = "".join((workers.log_dir / f"{n}.log").read_text() for n in ("a", "b"))
    assert "reclaimed" not in logs
    redis = client.journal.redis
    # Finished jobs are deleted from the stream (with their tokens); each result stays until its job is
    # answered, then goes.
    await drained(redis)
    assert all([await redis.exists(RESULT + s.job_id) for s in specs])
    for s in specs:
        await client.answered(s.job_id, delivered=True)
    assert not any([await redis.exists(RESULT + s.job_id) for s in specs])


async def test_a_poison_job_is_set_aside_and_killed_workers_leave_nothing(workers, client):
    """A job whose worker dies three times (here: SIGKILL while its render pool renders it) is answered and
    set aside; the dead workers' render processes go (they exit with their worker, or the next worker's
    start-up kills them) and the next worker deletes the dead workers' folders."""
    names = ["a", "b", "c"]
    for name in names:
        workers.start(name, BATCH_SIZE="2")
    workers.wait_healthy(timeout=600)
    tmp = workers.log_dir / "tmp"
    by_pid = {str(workers.pid(n)): n for n in names}
    killed: list[str] = []
    orphans: list[int] = []

    async def on_event(s, e):
        if e.get("stage") != "rendering":
            return
        name = by_pid[e.get("worker", started[s.job_id]).rsplit(":", 1)[1]]
        # The pool is warm before the worker says it is healthy: its processes are there, one rendering.
        orphans.extend(render_processes_of(workers.pid(name)))
        os.kill(workers.pid(name), signal.SIGKILL)
        killed.append(name)
        if len(killed) == 3:
            workers.start("d")

    started: dict[str, str] = {}

    async def track(s, e):
        if e.get("stage") == "started":
            started[s.job_id] = e["worker"]
        await on_event(s, e)

    poison = spec(99, length=900)
    (result,) = await run_all(client, [poison], track)
    assert sorted(killed) == names and orphans
    assert not result.ok and "set aside" in result.error and "3 times" in result.error
    kept = await client.journal.redis.xrange(SET_ASIDE)
    assert len(kept) == 1 and kept[0][1][b"job_id"].decode() == poison.job_id
    assert json.loads(kept[0][1][b"spec"])["interaction_token"] is None  # no token left for anyone
    await drained(client.journal.redis)
    workers.wait_healthy(timeout=600, names=["d"])
    assert not [pid for pid in orphans if Path(f"/proc/{pid}").exists() and _not_zombie(pid)]
    assert [p.name for p in tmp.iterdir()] == [f"etude-worker-{workers.pid('d')}"]


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_redis_back_without_its_data_loses_no_job(tiny_model_dir, tmp_path):
    """Redis restarted empty while a worker is busy: the worker recreates its group and lives on, and every
    job the bot waits for is queued again and answered."""
    server = RedisServer(tmp_path, persist=False)
    server.start()
    pool = Workers(server.url, tiny_model_dir, tmp_path)
    sched = await scheduler_for(server.url)
    try:
        pool.start("a")
        pool.wait_healthy(timeout=600)
        wiped = asyncio.Event()

        async def on_event(s, e):
            if e.get("stage") == "rendering" and not wiped.is_set():
                wiped.set()
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)

        results = await run_all(sched, [spec(200 + i, length=200) for i in range(6)], on_event)
        assert wiped.is_set()
        assert all(r.ok for r in results), [r.error for r in results]
        assert pool.procs["a"].poll() is None
        assert "recreating" in (tmp_path / "a.log").read_text()
    finally:
        await close(sched)
        pool.stop_all()
        server.stop()


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_redis_down_at_start_is_waited_for_and_a_wrong_password_is_one_error(tiny_model_dir, tmp_path):
    port = free_port()
    server = RedisServer(tmp_path, port=port)
    pool = Workers(server.url, tiny_model_dir, tmp_path)
    pool.start("a")
    try:
        log = tmp_path / "a.log"
        for _ in range(6000):  # the worker imports TensorFlow first: seconds, or minutes on a busy machine
            attempts = log.read_text().count("Redis unreachable (attempt")
            if attempts >= 2:
                break
            await asyncio.sleep(0.1)
        assert attempts >= 2 and "Traceback" not in log.read_text()
        for _ in range(600):
            try:
                status, body = health(pool.ports["a"])
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert status == 503 and body["waiting_for"] == "redis"
        server.start()
        await asyncio.to_thread(pool.wait_healthy, 600)
    finally:
        pool.stop_all()
        server.stop()

    locked = RedisServer(tmp_path, password="right")
    locked.start()
    try:
        env = {
            **os.environ,
            "REDIS_URL": f"redis://:wrong@127.0.0.1:{locked.port}/0",
            "MODEL_DIR": str(tiny_model_dir),
        }
        r = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bot", "worker"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert errors == ["error: Redis refused the login in REDIS_URL (wrong user or password)"]
        assert "Traceback" not in r.stderr and ":wrong@" not in r.stderr
    finally:
        locked.stop()


async def test_a_killed_workers_batch_mates_are_not_blamed_for_the_next_death(workers, client):
    """Jobs that were running when their worker died run alone on the next one: a second death strikes the
    job that was running then, not the ones that shared its first batch, so nobody is set aside for having
    been in a poison job's company (here the deaths are SIGKILLs while a job renders)."""
    started: dict[str, set[str]] = {}  # worker -> jobs it started
    on: dict[str, str] = {}  # job -> the worker that started it last
    killed: list[str] = []

    async def on_event(s, e):
        if e.get("stage") == "started":
            started.setdefault(e["worker"], set()).add(s.job_id)
            on[s.job_id] = e["worker"]
        if e.get("stage") != "rendering" or len(killed) == 2:
            return
        name = "b" if killed else "a"
        if on[s.job_id].endswith(f":{workers.pid(name)}"):
            os.kill(workers.pid(name), signal.SIGKILL)
            killed.append(name)
            workers.start("c" if killed == ["a", "b"] else "b", BATCH_SIZE="3")

    specs = [spec(300 + i, length=200) for i in range(3)]
    runs = asyncio.create_task(run_all(client, specs, on_event))
    for _ in range(300):  # all three in the stream before a worker reads it: they run as one batch
        if await client.journal.redis.xlen(STREAM) == 3:
            break
        await asyncio.sleep(0.1)
    workers.start("a", BATCH_SIZE="3")
    results = await asyncio.wait_for(runs, 600)
    assert killed == ["a", "b"]
    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(len(ids) for ids in started.values()) == [1, 3, 3], started  # a: 3, b: 1 alone, c: 3
    # The third worker found the job that died with the second started twice and the other two once.
    # Without running alone, the second worker would have started all three (twice each), and one more
    # death would have set all three aside.
    log_c = (workers.log_dir / "c.log").read_text()
    starts = [
        int(line.rsplit("(started ", 1)[1].split()[0]) for line in log_c.splitlines() if "reclaimed" in line
    ]
    assert sorted(starts) == [1, 1, 2], log_c
