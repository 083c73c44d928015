"""The worker: loads the model once, gathers waiting jobs into batches (`batcher`), samples them off the
event loop, renders each piece to files that fit the user's upload limit (`rendering`), and reports
progress on the way; `serve_worker` runs it as `etude worker` against the Redis queue."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bot.aio import Stopped, unless_stopped
from bot.errors import BadOption, EtudeError, reference, went_wrong
from bot.health import Metrics
from bot.model.backend import default_batching
from bot.model.composer import Composer, Composition, Seed
from bot.music.midi import SeedLimits
from bot.options import Options
from bot.queue.interfaces import Publish
from bot.queue.jobs import JobResult, JobSpec
from bot.render.audio import find_soundfont
from bot.render.pool import RenderPool
from bot.render.synth import check_soundfont
from bot.worker.batcher import Batcher, batch_sizes
from bot.worker.rendering import render_for_limit
from bot.worker.sweep import own_temp_folder

log = logging.getLogger(__name__)


async def _no_progress(job_id: str, event: dict) -> None:
    return None


FILLER = Options(length=1, rng_seed=0)


class Worker:
    """Holds the model and serves jobs; the same class runs inside the bot and in `etude worker`."""

    def __init__(
        self,
        model_dir: str | None = None,
        *,
        batch_size: int | None = None,
        batch_wait_ms: float | None = None,
        seed_limits: SeedLimits | None = None,
        soundfont: str | None = None,
        publish: Publish | None = None,
        name: str | None = None,
        render_processes: int | None = None,
        render_timeout: float = 120.0,
        warm_length: int | None = None,
    ):
        self.model_dir = model_dir
        self.limits = seed_limits or SeedLimits()
        self.soundfont = soundfont
        self.publish = publish or _no_progress
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.composer: Composer | None = None
        self.batcher: Batcher | None = None
        self.batch_size, self.batch_wait_ms = batch_size, batch_wait_ms
        self.metrics = Metrics("worker")
        self.ready = asyncio.Event()
        # Rendering: one warm process per core (or `render_processes`), started by `start`.
        self.render_processes, self.render_timeout = render_processes, render_timeout
        self.renderer: RenderPool | None = None
        self.warm_length = warm_length or Options().length  # the length `warm` compiles for
        # One thread per render process: jobs waiting for a renderer wait in its queue, not in the
        # event loop's default executor, which seeds and sampling need.
        self.render_threads: ThreadPoolExecutor | None = None
        self.closing = threading.Event()  # set by `close`; a start still compiling stops at the next shape

    @classmethod
    def from_settings(cls, settings, publish: Publish | None = None) -> Worker:
        return cls(
            settings.model_dir,
            batch_size=settings.batch_size,
            batch_wait_ms=settings.batch_wait_ms,
            seed_limits=settings.seed_limits(),
            soundfont=settings.soundfont,
            publish=publish,
            render_processes=settings.render_processes,
            warm_length=settings.warm_length,
            render_timeout=settings.render_timeout_seconds,
        )

    @property
    def card(self) -> dict:
        """The loaded model's card; empty until `start` has loaded the model."""
        return self.composer.model.card if self.composer else {}

    def resolve_batching(self) -> None:
        """A batch size or wait left unset becomes what suits the device the model runs on."""
        if self.batch_size is None or self.batch_wait_ms is None:
            size, wait_ms = default_batching()
            self.batch_size = self.batch_size or size
            self.batch_wait_ms = wait_ms if self.batch_wait_ms is None else self.batch_wait_ms

    async def start(self) -> None:
        """Start the render pool, load the model and compile the sampler, all before reporting ready.

        A soundfont that is missing or unreadable fails here, in one line, not at the first job.
        """
        t0 = time.perf_counter()
        font = find_soundfont(self.soundfont)
        check_soundfont(font)
        self.renderer = RenderPool(font, self.render_processes, self.render_timeout)
        # The pool's processes load the soundfont while the model loads and compiles.
        pool_ready = asyncio.create_task(asyncio.to_thread(self.renderer.start))
        try:
            self.composer = await asyncio.to_thread(Composer, self.model_dir)
            await asyncio.to_thread(self.resolve_batching)
            await asyncio.to_thread(self.warm)
        finally:
            await asyncio.wait({pool_ready})
        pool_ready.result()
        self.render_threads = ThreadPoolExecutor(self.renderer.size, thread_name_prefix="etude-render")
        renderer = self.renderer
        self.metrics.gauge(
            "render_processes_replaced",
            "Render processes replaced after a hang or a crash.",
            lambda: renderer.replaced,
        )
        self.batcher = Batcher(
            self.compose, self.batch_size, self.batch_wait_ms, on_batch=self.metrics.batches.observe
        )
        self.ready.set()
        log.info(
            "worker %s ready: model %s, %d render processes, in %.1f s",
            self.name,
            self.composer.model.name,
            self.renderer.size,
            time.perf_counter() - t0,
        )

    def warm(self) -> None:
        """Compile the sampler for every batch size it will be given, at `warm_length`, and each style
        network's at batch 1.

        Compiling is per shape: a one-note warm-up left the first 500-note request 3 times slower than the
        second. A seed changes no shape; other lengths compile on first use, once per power of two of their
        sampling steps.
        """
        assert self.composer is not None
        for size in batch_sizes(self.batch_size):
            if self.closing.is_set():  # closed while starting (SIGTERM): the next compile is not needed
                return
            t = time.perf_counter()
            self.composer.compose([(Options(length=self.warm_length, rng_seed=i), None) for i in range(size)])
            log.debug("sampler warm at batch %d in %.2f s", size, time.perf_counter() - t)
        # A style with a network of its own (the tunes a single-line seed goes to) has its own loop: warm at
        # batch 1, its usual batch, so its first piece does not wait seconds for the compiler.
        for style in self.composer.own_network_styles:
            if self.closing.is_set():
                return
            self.composer.compose([(Options(length=self.warm_length, rng_seed=0, style=style), None)])

    def compose(self, jobs: list[tuple[Options, Seed | None]]) -> list[Composition]:
        """`Composer.compose`, with the batch rounded up to a size `warm` compiled (fillers are dropped)."""
        assert self.composer is not None
        size = next((s for s in batch_sizes(self.batch_size) if s >= len(jobs)), len(jobs))
        return self.composer.compose([*jobs, *[(FILLER, None)] * (size - len(jobs))])[: len(jobs)]

    async def _compose(self, spec: JobSpec, options: Options, timings: dict) -> tuple[Composition, dict]:
        assert self.composer is not None and self.batcher is not None
        seed = None
        if spec.seed_b64:
            t = time.perf_counter()
            seed = await asyncio.to_thread(self.composer.seed, spec.seed, spec.seed_name, self.limits)
            timings["parse_seed"] = time.perf_counter() - t
            log.debug("job %s seed: %s", spec.job_id[:12], seed.meta)
        # "composing" when its batch starts: the queue's wait (`/status`) ends at the first note.
        piece = await self.batcher.submit(
            options, seed, lambda: self.publish(spec.job_id, {"stage": "composing", "percent": 15})
        )
        timings["sample"] = piece.timings["sample"]
        info = {
            "length": piece.onsets,
            "top_p": options.top_p,
            "seed_name": spec.seed_name if spec.seed_b64 else None,
            "include_seed": options.include_seed,
        }
        return piece, info

    async def _harmonize(self, spec: JobSpec, options: Options, timings: dict):
        """A chorale under the job's melody; sampled on its own thread, beside the batches of /compose."""
        from bot.model.harmonize import harmonize
        from bot.music.melody import read_melody

        assert self.composer is not None
        if not spec.seed_b64:
            raise BadOption("a harmonization needs a melody")
        t = time.perf_counter()
        melody = await asyncio.to_thread(read_melody, spec.seed, spec.seed_name, self.limits)
        timings["parse_melody"] = time.perf_counter() - t
        await self.publish(spec.job_id, {"stage": "composing", "percent": 15})
        piece = await asyncio.to_thread(harmonize, self.composer, options, melody)
        timings["sample"] = piece.timings["sample"]
        return piece, {"length": len(melody.notes), "seed_name": spec.seed_name}

    async def close(self) -> None:
        self.closing.set()
        if self.batcher:
            await self.batcher.close()
        if self.render_threads is not None:
            self.render_threads.shutdown(wait=False, cancel_futures=True)
        if self.renderer is not None:
            self.renderer.close()

    async def run(self, spec_json: dict) -> JobResult:
        """Do one job; never raises: a failure is a result with a message fit for the user."""
        t0 = time.perf_counter()
        spec = JobSpec.from_json(spec_json)
        timings: dict[str, float] = {}
        try:
            await self.ready.wait()
            assert self.composer is not None and self.batcher is not None
            await self.publish(spec.job_id, {"stage": "started", "percent": 5, "worker": self.name})
            options = spec.compose_options().check()
            if spec.kind == "harmonize":
                piece, info = await self._harmonize(spec, options, timings)
            else:
                piece, info = await self._compose(spec, options, timings)
            await self.publish(spec.job_id, {"stage": "rendering", "percent": 60})
            t = time.perf_counter()
            files, note = await asyncio.get_running_loop().run_in_executor(
                self.render_threads,
                functools.partial(
                    render_for_limit, piece, spec.attachment_limit, self.renderer, video=options.video
                ),
            )
            timings["render"] = time.perf_counter() - t
            await self.publish(spec.job_id, {"stage": "uploading", "percent": 95})
            self.metrics.sampled(info["length"], piece.timings["sample"])
            info.update(
                name=piece.name,
                key=piece.key_text,
                tempo=round(piece.tempo),
                temperature=piece.options.temperature,
                rng_seed=piece.options.rng_seed,
                instrument=piece.options.instrument,
                model=piece.model,
                seconds=round(piece.seconds, 1),
                note=note,
                kind=spec.kind,
                said=piece.said,
            )
            result = JobResult(spec.job_id, True, files=files, info=info)
        except EtudeError as e:
            result = JobResult(spec.job_id, False, error=str(e))
        except Exception:
            ref = reference(spec.job_id)
            log.exception("job %s failed (ref %s)", spec.job_id, ref)
            result = JobResult(spec.job_id, False, error=went_wrong(ref), info={"ref": ref})
        timings["total"] = time.perf_counter() - t0
        result.timings = {k: round(v, 3) for k, v in timings.items()}
        result.worker = self.name
        self.metrics.job(result.ok, time.time() - spec.submitted)
        log.info(
            "job %s %s user=%s kind=%s length=%s %s",
            spec.job_id[:12],
            "ok" if result.ok else "failed",
            spec.user_id,
            spec.kind,
            spec.options.get("length"),
            " ".join(f"{k}={v:.2f}s" for k, v in result.timings.items()),
        )
        return result


async def serve_worker(settings, stop: asyncio.Event | None = None) -> None:
    """`etude worker`: consume the Redis queue until SIGTERM/SIGINT (or `stop`).

    On stop it takes no new job, finishes what runs within `STOP_DEADLINE_SECONDS`, hands what is left back
    to the queue and returns (exit 0). One process per GPU (`CUDA_VISIBLE_DEVICES`); each loads the model once.
    """
    import signal

    from bot.health import serve
    from bot.queue.consume import consume
    from bot.queue.redis_keys import STREAM, WORKERS
    from bot.queue.redis_state import RedisProgress, queue_depth, wait_for_redis
    from bot.queue.results import RedisResults
    from bot.queue.streams import JobStream

    if not settings.redis_url:
        raise BadOption(
            "REDIS_URL is not set: `etude worker` serves a Redis queue (without one the bot runs its own worker)"
        )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (
            NotImplementedError,
            RuntimeError,
        ):  # not the main thread (tests): `stop` is set by the caller
            pass
    own_temp_folder()
    state = {"waiting_for": "redis"}
    worker = Worker.from_settings(settings)

    async def healthy() -> bool:
        return worker.ready.is_set() and not stop.is_set() and not state["waiting_for"]

    async def detail() -> dict:
        return {"waiting_for": state["waiting_for"]} if state["waiting_for"] else {}

    health = None
    if settings.health_port:
        health = await serve(settings.health_port, worker.metrics, healthy, detail)
    progress = None
    try:  # a SIGTERM while waiting for Redis or loading the model ends the wait: nothing is running yet
        await unless_stopped(wait_for_redis(settings.redis_url), stop)
        state["waiting_for"] = "model"
        progress = RedisProgress(settings.redis_url)
        worker.publish = progress.publish
        # First: the batch size, which sizes the stream's reads, may come from the device.
        await unless_stopped(worker.start(), stop)
    except BaseException as e:
        await worker.close()
        if progress is not None:
            await progress.close()
        if health is not None:
            await health.cleanup()
        if isinstance(e, Stopped):
            log.info("worker %s stopped before it was ready", worker.name)
            return
        raise
    results = RedisResults(settings.redis_url)
    stream = JobStream(
        settings.redis_url,
        results=results,
        consumer=worker.name,
        reclaim_seconds=settings.reclaim_seconds,
        fetch=worker.batch_size,
    )
    await stream.start()
    state["waiting_for"] = ""

    async def heartbeat() -> None:
        while True:
            try:
                now = time.time()
                await progress.redis.hset(WORKERS, worker.name, now)
                # Workers killed outright never said goodbye: their beats go after an hour.
                beats = await progress.redis.hgetall(WORKERS)
                gone = [k for k, v in beats.items() if now - float(v) > 3600]
                if gone:
                    await progress.redis.hdel(WORKERS, *gone)
            except Exception:  # Redis restarting: the next beat will do
                pass
            await asyncio.sleep(5)

    worker.metrics.gauge("queue_depth", "Jobs waiting or running.", lambda: queue_depth(progress.redis))
    beats = asyncio.create_task(heartbeat())
    log.info("worker %s consuming %s", worker.name, STREAM)
    # At most a batch of jobs at a time: more would only wait here while another worker sits idle. On stop:
    # no new job, the running ones finish within the deadline, the rest go back to the queue.
    handed = await consume(
        stream,
        results,
        worker.run,
        limit=worker.batch_size,
        stop=stop,
        deadline=settings.stop_deadline_seconds,
    )
    if handed:
        log.info("worker %s handed %d unfinished jobs back to the queue", worker.name, handed)
    beats.cancel()
    try:
        await progress.redis.hdel(WORKERS, worker.name)
    except Exception:
        pass
    if health is not None:
        await health.cleanup()
    await worker.close()
    await stream.close()
    await results.close()
    await progress.close()
    shutil.rmtree(tempfile.gettempdir(), ignore_errors=True)
    log.info("worker %s stopped", worker.name)
