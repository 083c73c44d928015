"""The embedded queue's durable parts: the SQLite journal, results read once, the bounded seed store, the
scheduler's public life-cycle methods."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from bot.chat.reply import SeedStore
from bot.options import Options
from bot.queue.broker import make_broker, register
from bot.queue.interfaces import Journal, Progress
from bot.queue.jobs import JobResult, JobSpec
from bot.queue.journal import SQLiteJournal
from bot.queue.scheduler import LocalProgress, MemoryJournal, Restarting, Scheduler

pytestmark = pytest.mark.timeout(60)


def spec(user: int = 1, **kw) -> JobSpec:
    return JobSpec(options=asdict(Options(length=10, rng_seed=user)), user_id=user, **kw)


async def test_the_sqlite_journal_outlives_its_process(tmp_path):
    path = tmp_path / "state" / "journal.sqlite3"
    first = SQLiteJournal(path)
    assert isinstance(first, Journal) and isinstance(MemoryJournal(), Journal)
    a, b = spec(1), spec(2).with_seed(b"MThd", "x")
    await first.add(a)
    await first.add(b)
    await first.mark_kicked(a.job_id)
    assert [(s.job_id, k) for s, k in await first.pending()] == [(a.job_id, True), (b.job_id, False)]
    # A new process: nothing is in its in-memory queue, so every job is to be queued again.
    again = SQLiteJournal(path)
    assert [(s, k) for s, k in await again.pending()] == [(a, False), (b, False)]
    assert await again.contains(a.job_id)
    assert not await again.delivered(a.job_id)
    await again.mark_delivered(a.job_id)
    await again.remove(a.job_id)
    assert not await again.contains(a.job_id) and await again.delivered(a.job_id)
    assert [s.job_id for s, _ in await again.pending()] == [b.job_id]
    # A job whose answer was on its way when its process stopped is still pending for the next one.
    assert [s.job_id for s, _ in await SQLiteJournal(path).pending()] == [b.job_id]
    assert not await SQLiteJournal(path).delivered(b.job_id)


async def test_a_job_is_answered_once_by_a_scheduler_and_then_forgotten():
    sched = Scheduler(register(make_broker(None), None), LocalProgress())
    a = spec(1)
    await sched.journal.add(a)
    assert await sched.claim_delivery(a.job_id) and not await sched.claim_delivery(a.job_id)
    await sched.answered(a.job_id, delivered=True)
    assert not await sched.journal.contains(a.job_id)
    assert not await sched.claim_delivery(a.job_id)  # answered: a second run of the job is not sent


async def test_embedded_results_are_read_once_and_bounded():
    async def run(spec_json: dict) -> dict:
        return JobResult(spec_json["job_id"], True, info={"n": spec_json["user_id"]}).to_json()

    broker = make_broker(None, result_seconds=60)
    task = register(broker, run)
    await broker.startup()
    sched = Scheduler(task, LocalProgress(), queue_max=50, user_running=50, user_waiting=50)
    assert isinstance(sched.progress, Progress)
    jobs = [spec(i) for i in range(10)]
    for j in jobs:
        sched.admit(j)
    results = await asyncio.gather(*(sched.run(j) for j in jobs))
    assert [r.info["n"] for r in results] == list(range(10))
    assert not broker.result_backend.results  # each result left memory when its waiter read it
    await broker.shutdown()


def test_scheduler_tracks_releases_and_drains():
    sched = Scheduler(None, LocalProgress(), queue_max=5)
    a, b = spec(1), spec(2)
    sched.admit(a)
    sched.track(b)
    assert sched.in_flight() == 2
    sched.release(a.job_id)
    assert [s.job_id for s in sched.drain()] == [b.job_id]
    with pytest.raises(Restarting, match="restarting"):
        sched.admit(spec(3))


def test_the_seed_store_keeps_the_most_recent_within_its_size(tmp_path):
    store = SeedStore(tmp_path, max_bytes=3000)
    keys = [store.put(bytes([i]) * 1000) for i in range(3)]
    store.put(bytes([0]) * 1000)  # used again: now the most recent
    newest = store.put(bytes([9]) * 1000)
    assert store.get(newest) and store.get(keys[0]) and store.get(keys[2])
    assert store.get(keys[1]) is None  # the least recently used went
    assert sum(p.stat().st_size for p in (tmp_path / "seeds").glob("*.mid")) <= 3000
