"""The queue without Discord: the in-memory queue, the embedded worker, batching, limits, progress."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import asdict

import pytest
import pytest_asyncio

from bot.errors import RenderError
from bot.music.midi_out import midi_bytes
from bot.options import Options
from bot.queue.jobs import JobResult, JobSpec, ResultFile
from bot.queue.memory import MemoryQueue
from bot.queue.results import MemoryResults
from bot.queue.scheduler import LocalProgress, QueueFull, Scheduler, UserLimit
from bot.render.pool import RenderPool
from bot.worker.batcher import Batcher
from bot.worker.rendering import render_for_limit
from bot.worker.worker import Worker

pytestmark = pytest.mark.timeout(300)
SHARED_LOOP = pytest.mark.asyncio(loop_scope="module")  # the tests of the file's one embedded worker


def spec(user=1, length=20, rng=1, video=False, **kw) -> JobSpec:
    return JobSpec(options=asdict(Options(length=length, rng_seed=rng, video=video)), user_id=user, **kw)


def test_job_spec_is_plain_json():
    s = spec().with_seed(b"MThd\x00", "x")
    again = JobSpec.from_json(__import__("json").loads(__import__("json").dumps(s.to_json())))
    assert again == s and again.seed == b"MThd\x00"


def test_admission_limits_per_user_and_in_all():
    sched = Scheduler(
        MemoryQueue(), MemoryResults(), LocalProgress(), queue_max=5, user_running=1, user_waiting=2
    )
    assert [sched.admit(spec(user=1)) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(UserLimit, match="3 pieces on the way"):
        sched.admit(spec(user=1))
    sched.admit(spec(user=2))
    sched.admit(spec(user=3))
    with pytest.raises(QueueFull, match="try again"):
        sched.admit(spec(user=4))


@SHARED_LOOP
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


@SHARED_LOOP
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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embedded_worker(tiny_model_dir):
    """One embedded worker for the file: starting one (render pool, model, a compile per batch size) is
    the slow part, and what each test changes of it (`embedded`) is put back after the test."""
    progress = LocalProgress()
    worker = Worker(
        str(tiny_model_dir), batch_size=8, batch_wait_ms=30, publish=progress.publish, warm_length=20
    )
    results = MemoryResults()
    queue = MemoryQueue(worker.run, results)
    await queue.start()
    await worker.start()
    yield queue, results, progress, worker
    await queue.close()
    await worker.close()


@pytest_asyncio.fixture(loop_scope="module")
async def embedded(embedded_worker):
    """A fresh scheduler over the shared worker; a renderer or compose step a test swapped in goes."""
    queue, results, progress, worker = embedded_worker
    renderer, compose = worker.renderer, worker.batcher.compose
    yield Scheduler(queue, results, progress, queue_max=20, user_running=1, user_waiting=5), worker
    if worker.renderer is not renderer:  # the test closed the worker's own pool: start one like it
        worker.renderer.close()
        worker.renderer = RenderPool(renderer.soundfont, renderer.size, renderer.timeout)
        await asyncio.to_thread(worker.renderer.start)
    worker.batcher.compose = compose


@SHARED_LOOP
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
    # `length` counts the notes and chords written: the asked-for number, plus at most the closing cadence.
    asked = [10, 11, 12, 13, 14, 12]
    assert all(n <= r.info["length"] <= n + max(8, n // 10) for n, r in zip(asked, results))
    assert results[-1].info["seed_name"] == "bach"
    assert {f.name.rsplit(".", 1)[1] for f in results[0].files} == {"mid", "ogg", "wav", "png"}
    assert {"started", "composing", "rendering", "uploading"} <= set(events)
    batched = worker.metrics.registry.get_sample_value
    # Jobs that arrived together were sampled together: fewer batches than jobs.
    assert batched("etude_batch_size_count") < batched("etude_batch_size_sum")
    assert not sched.waiting and not sched.running


@SHARED_LOOP
async def test_a_bad_seed_is_a_result_not_a_crash(embedded):
    sched, worker = embedded
    bad = spec().with_seed(b"RIFF....WAVEfmt ", "song")
    sched.admit(bad)
    result = await sched.run(bad)
    assert not result.ok and result.error == "the seed is not a MIDI file"
    good = spec(rng=2)
    sched.admit(good)
    assert (await sched.run(good)).ok


@SHARED_LOOP
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


@SHARED_LOOP
async def test_a_stuck_or_crashed_renderer_costs_only_that_jobs_audio(embedded):
    from render_faults import CRASH_SEED, HANG_SEED

    sched, worker = embedded
    font = worker.renderer.soundfont
    worker.renderer.close()
    worker.renderer = RenderPool(font, size=1, timeout=8, target="tests.render_faults:render")
    await asyncio.to_thread(worker.renderer.start)
    for bad, why in ((HANG_SEED, "rendering took too long"), (CRASH_SEED, "the renderer crashed")):
        job = spec(length=12, rng=bad)
        sched.admit(job)
        result = await sched.run(job)
        assert result.ok and [f.name for f in result.files] == [f"etude-{bad}.mid"]
        assert result.info["note"] == f"No audio this time ({why}); the .mid is here."
    good = spec(length=12, rng=6)
    sched.admit(good)
    result = await sched.run(good)
    assert [f.name.rsplit(".", 1)[1] for f in result.files] == ["mid", "ogg", "wav", "png"]
    assert worker.renderer.replaced == 2


@SHARED_LOOP
async def test_video_on_request(embedded, tmp_path):
    sched, _ = embedded
    job = spec(length=12, rng=8, video=True)
    sched.admit(job)
    result = await sched.run(job)
    assert [f.name.rsplit(".", 1)[1] for f in result.files] == ["mid", "ogg", "wav", "png", "mp4"]
    assert next(f for f in result.files if f.name.endswith(".mp4")).content_type == "video/mp4"


@SHARED_LOOP
async def test_a_missing_or_unreadable_soundfont_fails_at_start_in_one_line(tiny_model_dir, tmp_path):
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"not a soundfont")
    for font in (tmp_path / "missing.sf2", garbage):
        worker = Worker(str(tiny_model_dir), soundfont=str(font))
        with pytest.raises(RenderError) as err:
            await worker.start()
        assert "\n" not in str(err.value) and font.name in str(err.value)
        assert not worker.ready.is_set()
        await worker.close()


def test_render_for_limit_reduces_the_wav_and_keeps_a_full_quality_ogg(composer):
    short = composer.compose_one(Options(length=30, rng_seed=3, tempo=200))
    files, note = render_for_limit(short, 10 * 1024 * 1024)
    assert [f.name.rsplit(".", 1)[1] for f in files] == ["mid", "ogg", "wav", "png"] and note == ""
    assert [f.content_type for f in files] == ["audio/midi", "audio/ogg", "audio/wav", "image/png"]
    piece = composer.compose_one(Options(length=120, rng_seed=3, tempo=40))
    files, note = render_for_limit(piece, 1_500_000)
    assert all(len(f.data) <= 1_500_000 for f in files)
    assert [f.name.rsplit(".", 1)[1] for f in files] == ["mid", "ogg", "wav", "png"]
    assert note.startswith("The .wav ")  # the user is told what was done to it


def test_result_json_and_parts_round_trip():
    r = JobResult("j", True, files=[], info={"a": 1})
    assert JobResult.from_json(r.to_json()) == r
    wav = bytes(range(256)) * 64
    r.files = [ResultFile("a.mid", b"MThd", "audio/midi"), ResultFile("a.wav", wav, "audio/wav")]
    parts = r.to_parts()
    assert parts["file:1"] is wav and b"a.wav" in parts["meta"] and b"MThd" not in parts["meta"]
    assert JobResult.from_parts({k.encode(): v for k, v in parts.items()}) == r


@SHARED_LOOP
async def test_the_memory_queue_runs_at_most_its_limit_at_once():
    """Ten jobs, a limit of three: three run, the fourth starts only when one of them has its result
    stored, and every job is acknowledged once it is stored."""
    gate, running, most, started = asyncio.Event(), set(), [0], asyncio.Event()

    async def run(spec_json: dict) -> JobResult:
        running.add(spec_json["n"])
        most[0] = max(most[0], len(running))
        if len(running) == 3:
            started.set()
        await gate.wait()
        running.discard(spec_json["n"])
        return JobResult(f"job-{spec_json['n']}", True, info={"n": spec_json["n"]})

    results = MemoryResults()
    queue = MemoryQueue(run, results, limit=3)
    await queue.start()
    for n in range(10):
        await queue.submit(f"job-{n}", {"n": n})
    await asyncio.wait_for(started.wait(), 30)
    for _ in range(100):  # the event loop has every chance to start a fourth job
        await asyncio.sleep(0)
    assert sorted(running) == [0, 1, 2] and queue.waiting.qsize() == 7 and len(queue.held) == 3
    gate.set()
    while len(results.stored) < 10:
        await asyncio.sleep(0)
    assert most[0] == 3 and not queue.held and queue.waiting.empty()
    assert [(await results.get(f"job-{n}")).info["n"] for n in range(10)] == list(range(10))
    await queue.close()


@SHARED_LOOP
async def test_a_job_waits_in_the_queue_until_its_batch_starts(embedded):
    """`/status`'s wait ends at the first note: a job a worker has taken but not yet sampled still waits."""
    sched, worker = embedded
    gate = threading.Event()
    compose = worker.batcher.compose

    def held(jobs):
        gate.wait(120)
        return compose(jobs)

    worker.batcher.compose = held
    first, second = spec(user=31, length=10, rng=1), spec(user=32, length=10, rng=2)
    stages: dict[str, list[str]] = {first.job_id: [], second.job_id: []}
    seen = asyncio.Event()

    def watcher(job_id):
        async def on_progress(e):
            stages[job_id].append(e["stage"])
            if job_id == second.job_id and e["stage"] == "started":
                seen.set()

        return on_progress

    try:
        sched.admit(first)
        runs = [asyncio.create_task(sched.run(first, watcher(first.job_id)))]
        while first.job_id not in sched.running:  # its batch holds the sampler
            await asyncio.sleep(0.05)
        sched.admit(second)
        runs.append(asyncio.create_task(sched.run(second, watcher(second.job_id))))
        await asyncio.wait_for(seen.wait(), 60)  # the worker has taken the second job...
        assert second.job_id in sched.waiting and sched.place(second.job_id) == 1  # ...which still waits
        assert "composing" not in stages[second.job_id]
        waits = len(sched.waits)
        gate.set()
        results = await asyncio.gather(*runs)
    finally:
        gate.set()
        worker.batcher.compose = compose
    assert all(r.ok for r in results) and len(sched.waits) == waits + 1
    assert stages[second.job_id].index("started") < stages[second.job_id].index("composing")
