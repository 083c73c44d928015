"""The embedded queue's durable parts: the SQLite journal, results kept until forgotten or too old, the
bounded seed store, the scheduler's public life-cycle methods."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from bot.chat.reply import SeedStore
from bot.options import Options
from bot.queue.interfaces import Consumer, JobQueue, Journal, Progress, Results
from bot.queue.jobs import JobResult, JobSpec
from bot.queue.journal import SQLiteJournal
from bot.queue.memory import MemoryQueue
from bot.queue.results import MemoryResults
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
    sched = Scheduler(MemoryQueue(), MemoryResults(), LocalProgress())
    a = spec(1)
    await sched.journal.add(a)
    assert await sched.claim_delivery(a.job_id) and not await sched.claim_delivery(a.job_id)
    await sched.answered(a.job_id, delivered=True)
    assert not await sched.journal.contains(a.job_id)
    assert not await sched.claim_delivery(a.job_id)  # answered: a second run of the job is not sent


async def test_embedded_results_are_kept_until_answered_and_bounded_by_age():
    async def run(spec_json: dict) -> JobResult:
        return JobResult(spec_json["job_id"], True, info={"n": spec_json["user_id"]})

    now = [0.0]
    store = MemoryResults(max_age=60, clock=lambda: now[0])
    queue = MemoryQueue(run, store)
    assert isinstance(queue, JobQueue) and isinstance(queue, Consumer) and isinstance(store, Results)
    await queue.start()
    sched = Scheduler(queue, store, LocalProgress(), queue_max=50, user_running=50, user_waiting=50)
    assert isinstance(sched.progress, Progress)
    jobs = [spec(i) for i in range(10)]
    for j in jobs:
        sched.admit(j)
    results = await asyncio.gather(*(sched.run(j) for j in jobs))
    assert [r.info["n"] for r in results] == list(range(10))
    # Kept until the user has the answer: a bot that fails to deliver can read the result again.
    assert all([await store.get(j.job_id) for j in jobs])
    for j in jobs[:5]:
        await sched.answered(j.job_id, delivered=True)
    assert sorted(store.stored) == sorted(j.job_id for j in jobs[5:])
    now[0] = 61.0  # nobody came for the rest: too old to be read, and dropped by the next store
    assert await store.get(jobs[5].job_id) is None
    await store.put(JobResult("late", True))
    assert list(store.stored) == ["late"]
    await queue.close()


def test_scheduler_tracks_releases_and_drains():
    sched = Scheduler(MemoryQueue(), MemoryResults(), LocalProgress(), queue_max=5)
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
