"""The worker: loads the model once, gathers waiting jobs into batches, samples them off the event loop,
renders each piece to files that fit the user's upload limit, and reports progress on the way."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.errors import BadOption, EtudeError
from bot.health import Metrics
from bot.model.backend import default_batching
from bot.model.composer import Composer, Composition, Seed
from bot.music.midi import SeedLimits
from bot.options import Options
from bot.queue.jobs import JobResult, JobSpec, ResultFile
from bot.render.files import write_outputs

log = logging.getLogger(__name__)

Publish = Callable[[str, dict], Awaitable[None]]


async def _no_progress(job_id: str, event: dict) -> None:
    return None


class Batcher:
    """Gathers requests that arrive together and samples them in one call on a worker thread.

    The first request waits at most `wait_ms` for company; a batch holds at most `size` requests.
    """

    def __init__(
        self,
        compose: Callable[[list], list],
        size: int = 16,
        wait_ms: float = 20,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.compose, self.size, self.wait = compose, size, wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.sizes: Counter[int] = Counter()
        self.on_batch = on_batch

    async def submit(self, options: Options, seed: Seed | None) -> Composition:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="etude-batcher")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((options, seed, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(batch) < self.size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            batch = [b for b in batch if not b[2].cancelled()]
            if not batch:
                continue
            self.sizes[len(batch)] += 1
            if self.on_batch:
                self.on_batch(len(batch))
            try:
                pieces = await asyncio.to_thread(self.compose, [(o, s) for o, s, _ in batch])
            except Exception as e:  # every request of the batch learns of it; the loop goes on
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (*_, fut), piece in zip(batch, pieces):
                if not fut.done():
                    fut.set_result(piece)

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def render_for_limit(
    piece: Composition, limit: int, soundfont: str | None = None
) -> tuple[list[ResultFile], str]:
    """The .mid, an audio file and the piano roll, each within `limit` bytes, and a note on what was done.

    The WAV is resampled or made mono to fit; where even that would cut the piece short, a compressed
    .ogg takes its place if it fits whole, and failing that the WAV holds as much as fits.
    """
    from bot.render.audio import render_ogg

    with tempfile.TemporaryDirectory(prefix="etude-") as tmp:
        out = write_outputs(piece, Path(tmp), max_bytes=limit, soundfont=soundfont)
        note = ""
        audio_path, audio_type = out.wav, "audio/wav"
        if out.audio.shortened:
            try:
                ogg = render_ogg(out.midi, Path(tmp) / f"{piece.name}.ogg", soundfont=soundfont)
            except EtudeError:
                ogg = None
            if ogg is not None and ogg.bytes <= limit:
                audio_path, audio_type = ogg.path, "audio/ogg"
                note = (
                    "The audio is a compressed .ogg: a .wav of the whole piece would pass the upload limit."
                )
            else:
                note = (
                    f"The .wav holds the first {out.audio.seconds:.0f} s to fit the upload limit; "
                    "the .mid has the whole piece."
                )
        elif out.audio.sample_rate < 44100 or out.audio.channels < 2:
            note = f"The .wav is {out.audio.sample_rate} Hz {'mono' if out.audio.channels == 1 else 'stereo'} to fit the upload limit."
        files = [
            ResultFile(out.midi.name, out.midi.read_bytes(), "audio/midi"),
            ResultFile(audio_path.name, audio_path.read_bytes(), audio_type),
            ResultFile(out.png.name, out.png.read_bytes(), "image/png"),
        ]
    too_big = [f.name for f in files if len(f.data) > limit]
    if too_big:  # only a limit far below Discord's could do this; the .mid alone still goes out
        files = [f for f in files if len(f.data) <= limit]
        note = (note + " " if note else "") + f"Left out to fit the upload limit: {', '.join(too_big)}."
    return files, note


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

    @classmethod
    def from_settings(cls, settings, publish: Publish | None = None) -> Worker:
        return cls(
            settings.model_dir,
            batch_size=settings.batch_size,
            batch_wait_ms=settings.batch_wait_ms,
            seed_limits=settings.seed_limits(),
            soundfont=settings.soundfont,
            publish=publish,
        )

    async def start(self) -> None:
        """Load the model (on a thread: it takes seconds) and compile the sampler with a tiny warm-up."""
        t0 = time.perf_counter()
        self.composer = await asyncio.to_thread(Composer, self.model_dir)
        if self.batch_size is None or self.batch_wait_ms is None:  # unset: what suits the model's device
            size, wait_ms = await asyncio.to_thread(default_batching)
            self.batch_size = self.batch_size or size
            self.batch_wait_ms = wait_ms if self.batch_wait_ms is None else self.batch_wait_ms
        await asyncio.to_thread(self.composer.compose_one, Options(length=1, rng_seed=0))
        self.batcher = Batcher(
            self.composer.compose, self.batch_size, self.batch_wait_ms, on_batch=self.metrics.batches.observe
        )
        self.ready.set()
        log.info(
            "worker %s ready: model %s in %.1f s",
            self.name,
            self.composer.model.name,
            time.perf_counter() - t0,
        )

    async def close(self) -> None:
        if self.batcher:
            await self.batcher.close()

    async def run(self, spec_json: dict) -> dict:
        """Do one job; never raises: a failure is a result with a message fit for the user."""
        t0 = time.perf_counter()
        spec = JobSpec.from_json(spec_json)
        timings: dict[str, float] = {}
        try:
            await self.ready.wait()
            assert self.composer is not None and self.batcher is not None
            await self.publish(spec.job_id, {"stage": "started", "percent": 5, "worker": self.name})
            options = spec.compose_options().check()
            seed = None
            if spec.seed_b64:
                t = time.perf_counter()
                seed = await asyncio.to_thread(self.composer.seed, spec.seed, spec.seed_name, self.limits)
                timings["parse_seed"] = time.perf_counter() - t
                log.debug("job %s seed: %s", spec.job_id[:12], seed.meta)
            await self.publish(spec.job_id, {"stage": "composing", "percent": 15})
            piece = await self.batcher.submit(options, seed)
            timings["sample"] = piece.timings["sample"]
            await self.publish(spec.job_id, {"stage": "rendering", "percent": 60})
            t = time.perf_counter()
            files, note = await asyncio.to_thread(
                render_for_limit, piece, spec.attachment_limit, self.soundfont
            )
            timings["render"] = time.perf_counter() - t
            await self.publish(spec.job_id, {"stage": "uploading", "percent": 95})
            self.metrics.notes += options.length
            self.metrics.sample_seconds += piece.timings["sample"]
            info = {
                "name": piece.name,
                "length": piece.onsets,
                "key": piece.key_text,
                "tempo": round(piece.tempo),
                "temperature": options.temperature,
                "top_p": options.top_p,
                "rng_seed": options.rng_seed,
                "instrument": options.instrument,
                "model": piece.model,
                "seconds": round(piece.seconds, 1),
                "seed_name": spec.seed_name if spec.seed_b64 else None,
                "include_seed": options.include_seed,
                "note": note,
            }
            result = JobResult(spec.job_id, True, files=files, info=info)
            self.metrics.done += 1
        except EtudeError as e:
            result = JobResult(spec.job_id, False, error=str(e))
            self.metrics.failed += 1
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("job %s failed (ref %s)", spec.job_id, ref)
            result = JobResult(
                spec.job_id, False, error=f"something went wrong (ref {ref})", info={"ref": ref}
            )
            self.metrics.failed += 1
        timings["total"] = time.perf_counter() - t0
        result.timings = {k: round(v, 3) for k, v in timings.items()}
        result.worker = self.name
        self.metrics.latency.observe(time.time() - spec.submitted)
        log.info(
            "job %s %s user=%s kind=%s length=%s %s",
            spec.job_id[:12],
            "ok" if result.ok else "failed",
            spec.user_id,
            spec.kind,
            spec.options.get("length"),
            " ".join(f"{k}={v:.2f}s" for k, v in result.timings.items()),
        )
        return result.to_json()


async def serve_worker(settings, stop: asyncio.Event | None = None) -> None:
    """`etude worker`: consume the Redis queue until SIGTERM/SIGINT (or `stop`), then finish what it holds.

    One process per GPU (`CUDA_VISIBLE_DEVICES`); each loads the model once.
    """
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from taskiq.acks import AcknowledgeType
    from taskiq.receiver import Receiver

    from bot.health import serve
    from bot.queue.broker import make_broker, register
    from bot.queue.redis_broker import WORKERS, RedisProgress, queue_depth

    if not settings.redis_url:
        raise BadOption(
            "REDIS_URL is not set: `etude worker` serves a Redis queue (without one the bot runs its own worker)"
        )
    stop = stop or asyncio.Event()
    progress = RedisProgress(settings.redis_url)
    worker = Worker.from_settings(settings, progress.publish)
    await worker.start()  # first: the batch size, which sizes the broker's reads, may come from the device
    broker = make_broker(settings.redis_url, settings.reclaim_seconds, worker.batch_size)
    register(broker, worker.run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (
            NotImplementedError,
            RuntimeError,
        ):  # not the main thread (tests): `stop` is set by the caller
            pass
    await broker.startup()

    async def heartbeat() -> None:
        while True:
            try:
                await progress.redis.hset(WORKERS, worker.name, time.time())
            except Exception:  # Redis restarting: the next beat will do
                pass
            await asyncio.sleep(5)

    async def healthy() -> bool:
        return worker.ready.is_set() and not stop.is_set()

    worker.metrics.gauges["queue_depth"] = lambda: queue_depth(progress.redis)
    beats = asyncio.create_task(heartbeat())
    health = None
    if settings.health_port:
        health = await serve(settings.health_port, worker.metrics, healthy)
    log.info("worker %s consuming %s", worker.name, "etude:jobs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        # At most a batch of jobs at a time: more would only wait here while another worker sits idle.
        receiver = Receiver(
            broker,
            pool,
            max_async_tasks=worker.batch_size,
            max_prefetch=0,
            ack_type=AcknowledgeType.WHEN_SAVED,
            run_startup=False,
        )
        finish = asyncio.Event()
        listening = asyncio.create_task(receiver.listen(finish))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({listening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        log.info("worker %s stopping: finishing the jobs it holds", worker.name)
        finish.set()
        await asyncio.gather(listening, return_exceptions=True)
    beats.cancel()
    try:
        await progress.redis.hdel(WORKERS, worker.name)
    except Exception:
        pass
    if health is not None:
        await health.cleanup()
    await worker.close()
    await broker.shutdown()
    await progress.close()
    log.info("worker %s stopped", worker.name)
