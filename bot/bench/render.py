"""`etude bench`'s rendering sections: render speed per core, the embedded worker's jobs/s, its first job
after ready against a warm one, and its peak memory with the render pool. Kept apart from the sampler and
training sections; `bot.bench.run` calls these."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import asdict
from pathlib import Path

from bot.options import UPLOAD_LIMIT_BYTES, Options


def _say(text: str = "") -> None:
    print(text, flush=True)


def _cpu() -> float:
    """CPU seconds of this process and its finished children: time on a shared machine, not a stopwatch."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_render(composer, length: int, runs: int = 3) -> None:
    """Render speed on one core (seconds of audio per second, for FluidSynth alone and for every file), and
    for one piece played in parts on every core."""
    from bot.render.audio import find_soundfont
    from bot.render.files import RenderRequest, local_synth, render_here, render_piece
    from bot.render.parts import cores

    synth = local_synth(find_soundfont())
    pieces = [composer.compose_one(Options(length=length, rng_seed=100 + i)) for i in range(runs)]
    requests = [RenderRequest.of(p, UPLOAD_LIMIT_BYTES) for p in pieces]
    render_piece(requests[0], synth)  # imports and page cache
    audio_s = synth_s = synth_cpu = 0.0
    for r in requests:
        t, c = time.perf_counter(), time.process_time()
        audio = synth.render(r.midi, 3600)
        synth_s += time.perf_counter() - t
        synth_cpu += time.process_time() - c
        audio_s += len(audio) / synth.settings.sample_rate
    _say(
        f"  FluidSynth alone ({synth.settings.sample_rate} Hz, reverb on, chorus off): "
        f"{audio_s / synth_s:6.0f} s of audio per second ({audio_s / synth_cpu:.0f} per CPU second)"
    )
    for video in (False, True):
        wall = cpu = 0.0
        for r in requests:
            r = RenderRequest(**{**r.__dict__, "video": video})
            t, c = time.perf_counter(), _cpu()
            out = render_piece(r, synth)
            wall += time.perf_counter() - t
            cpu += _cpu() - c
        label = "every file + .mp4" if video else "every file (.ogg, .wav, .png)"
        _say(
            f"  {label:30s} {audio_s / wall:6.0f} s of audio per second, {wall / runs:5.2f} s a piece "
            f"({cpu / runs:.2f} CPU s, ffmpeg included)"
        )
    wall = 0.0
    for r in requests:
        t = time.perf_counter()
        parts = render_here(r, cores=cores()).parts
        wall += time.perf_counter() - t
    _say(
        f"  {'every file, one piece on ' + str(cores()) + ' cores':30s} {audio_s / wall:6.0f} s of audio per second, "
        f"{wall / runs:5.2f} s a piece (played in {parts} parts at once)"
    )
    sizes = ", ".join(f"{f.name.rsplit('.', 1)[1]} {len(f.data) / 2**20:.2f} MiB" for f in out.files)
    _say(f"  one {length}-note reply ({audio_s / runs:.0f} s of music): {sizes}")
    if out.note:
        _say(f"  its note: {out.note}")


def _rss_mib(pid: int) -> float:
    """Peak resident memory of a live process, from /proc (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def bench_worker(model_dir: Path, length: int, jobs: int = 32, batch_size: int = 16) -> None:
    """The embedded worker as the bot runs it: start to ready, first job, a warm job, `jobs` at once."""
    from bot.queue.jobs import JobResult, JobSpec
    from bot.queue.memory import MemoryQueue
    from bot.queue.results import MemoryResults
    from bot.queue.scheduler import LocalProgress, Scheduler
    from bot.worker.worker import Worker

    progress = LocalProgress()
    worker = Worker(str(model_dir), batch_size=batch_size)
    store = MemoryResults()
    queue = MemoryQueue(worker.run, store)
    await queue.start()
    sched = Scheduler(
        queue, store, progress, queue_max=10_000, user_running=10_000, user_waiting=10_000, timeout=3600
    )
    t0 = time.perf_counter()
    await worker.start()
    ready_s = time.perf_counter() - t0

    async def one(i: int) -> tuple[float, JobResult]:
        spec = JobSpec(options=asdict(Options(length=length, rng_seed=i)), user_id=i)
        sched.admit(spec)
        t = time.perf_counter()
        result = await sched.run(spec)
        await sched.answered(spec.job_id, delivered=False)  # the files leave memory, as a delivered job's do
        return time.perf_counter() - t, result

    # The same piece twice (same options, same RNG seed): render time grows with the music's seconds, so
    # only one piece against itself says what being first costs.
    first, r1 = await one(1)
    warm, r2 = await one(1)
    t = time.perf_counter()
    results = await asyncio.gather(*(one(1000 + i) for i in range(jobs)))
    secs = time.perf_counter() - t
    ok = sum(r.ok for _, r in results)
    renderer = getattr(worker, "renderer", None)
    pool = sorted(renderer.pids()) if renderer is not None else []
    pool_rss = [_rss_mib(p) for p in pool]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    await queue.close()
    await worker.close()
    _say(f"  start to ready: {ready_s:.1f} s (model, sampler compiled for its batch sizes, renderer warm)")
    _say(
        f"  first job after ready: {first:.2f} s; a warm one: {warm:.2f} s ({first / warm:.2f}x); "
        f"files {', '.join(f.name.rsplit('.', 1)[1] for f in r2.files)}"
    )
    _say(
        f"  {jobs} jobs at once: {secs:.2f} s = {jobs / secs:.2f} jobs/s, {ok * length / secs:.0f} notes/s "
        f"end to end, {ok}/{jobs} ok, on {os.cpu_count()} cores"
    )
    if pool:
        _say(
            f"  peak RSS: worker {own:.0f} MiB, {len(pool)} render processes {sum(pool_rss):.0f} MiB "
            f"({', '.join(f'{r:.0f}' for r in pool_rss)}); together {own + sum(pool_rss):.0f} MiB"
        )
    else:
        _say(f"  peak RSS: worker {own:.0f} MiB, largest FluidSynth subprocess {kids:.0f} MiB")
