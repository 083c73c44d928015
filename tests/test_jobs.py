"""The queue without Discord: taskiq's in-memory broker, the embedded worker, batching, limits, progress."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import pytest

from bot.music.midi import midi_bytes
from bot.options import Options
from bot.queue.broker import make_broker, register
from bot.queue.jobs import JobResult, JobSpec
from bot.queue.scheduler import LocalProgress, QueueFull, Scheduler, UserLimit
from bot.queue.worker import Batcher, Worker, render_for_limit

pytestmark = pytest.mark.timeout(300)


def spec(user=1, length=20, rng=1, **kw) -> JobSpec:
    return JobSpec(options=asdict(Options(length=length, rng_seed=rng)), user_id=user, **kw)


def test_job_spec_is_plain_json():
    s = spec().with_seed(b"MThd\x00", "x")
    again = JobSpec.from_json(__import__("json").loads(__import__("json").dumps(s.to_json())))
    assert again == s and again.seed == b"MThd\x00"


def test_admission_limits_per_user_and_in_all():
    sched = Scheduler(None, LocalProgress(), queue_max=5, user_running=1, user_waiting=2)
    assert [sched.admit(spec(user=1)) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(UserLimit, match="3 pieces on the way"):
        sched.admit(spec(user=1))
    sched.admit(spec(user=2))
    sched.admit(spec(user=3))
    with pytest.raises(QueueFull, match="try again"):
        sched.admit(spec(user=4))


async def test_batcher_gathers_waiting_requests():
    calls = []

    def compose(jobs):
        calls.append(len(jobs))
        return [o.length for o, _ in jobs]

    b = Batcher(compose, size=4, wait_ms=50)
    results = await asyncio.gather(*(b.submit(Options(length=n), None) for n in range(1, 7)))
    await b.close()
    assert results == list(range(1, 7))
    assert calls == [4, 2]


async def test_batcher_reports_a_failure_to_each_request_and_goes_on():
    def compose(jobs):
        if any(o.length == 13 for o, _ in jobs):
            raise RuntimeError("boom")
        return [o.length for o, _ in jobs]

    b = Batcher(compose, size=8, wait_ms=1)
    with pytest.raises(RuntimeError):
        await b.submit(Options(length=13), None)
    assert await b.submit(Options(length=5), None) == 5
    await b.close()


@pytest.fixture
async def embedded(tiny_model_dir):
    progress = LocalProgress()
    worker = Worker(str(tiny_model_dir), batch_size=8, batch_wait_ms=30, publish=progress.publish)
    broker = make_broker(None)
    task = register(broker, worker.run)
    await broker.startup()
    await worker.start()
    yield Scheduler(task, progress, queue_max=20, user_running=1, user_waiting=5), worker
    await worker.close()
    await broker.shutdown()


async def test_embedded_queue_runs_jobs_with_progress(embedded, chorales):
    sched, worker = embedded
    events = []

    async def on_progress(e):
        events.append(e["stage"])

    jobs = [spec(user=i, length=10 + i, rng=i) for i in range(5)]
    seeded = spec(user=9, length=12).with_seed(midi_bytes(chorales[0].events[:16]), "bach")
    for j in [*jobs, seeded]:
        sched.admit(j)
    results = await asyncio.gather(*(sched.run(j, on_progress) for j in [*jobs, seeded]))
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.info["length"] for r in results] == [10, 11, 12, 13, 14, 12]
    assert results[-1].info["seed_name"] == "bach"
    assert {f.name.rsplit(".", 1)[1] for f in results[0].files} == {"mid", "wav", "png"}
    assert {"started", "composing", "rendering", "uploading"} <= set(events)
    batched = worker.metrics.registry.get_sample_value
    # Jobs that arrived together were sampled together: fewer batches than jobs.
    assert batched("etude_batch_size_count") < batched("etude_batch_size_sum")
    assert not sched.waiting and not sched.running


async def test_a_bad_seed_is_a_result_not_a_crash(embedded):
    sched, worker = embedded
    bad = spec().with_seed(b"RIFF....WAVEfmt ", "song")
    sched.admit(bad)
    result = await sched.run(bad)
    assert not result.ok and result.error == "the seed is not a MIDI file"
    good = spec(rng=2)
    sched.admit(good)
    assert (await sched.run(good)).ok


async def test_result_is_the_same_alone_or_in_a_batch(embedded):
    sched, _ = embedded
    alone = spec(user=1, length=15, rng=77)
    sched.admit(alone)
    single = await sched.run(alone)
    crowd = [spec(user=10 + i, length=15, rng=77 if i == 2 else i) for i in range(5)]
    for c in crowd:
        sched.admit(c)
    batched = await asyncio.gather(*(sched.run(c) for c in crowd))
    mid = lambda r: next(f.data for f in r.files if f.name.endswith(".mid"))  # noqa: E731
    assert mid(single) == mid(batched[2])


def test_render_for_limit_falls_back_when_the_wav_cannot_fit(composer):
    short = composer.compose_one(Options(length=30, rng_seed=3, tempo=200))
    files, note = render_for_limit(short, 10 * 1024 * 1024)
    assert [f.name.rsplit(".", 1)[1] for f in files] == ["mid", "wav", "png"] and note == ""
    piece = composer.compose_one(Options(length=120, rng_seed=3, tempo=40))
    files, note = render_for_limit(piece, 150_000)
    assert all(len(f.data) <= 150_000 for f in files)
    kinds = [f.name.rsplit(".", 1)[1] for f in files]
    assert kinds[0] == "mid" and kinds[1] in ("ogg", "wav")
    assert note  # the user is told what was done instead


def test_result_json_round_trip():
    r = JobResult("j", True, files=[], info={"a": 1})
    assert JobResult.from_json(r.to_json()) == r
