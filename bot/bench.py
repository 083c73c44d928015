"""`etude bench`: numbers, not tests. Prints the sampler's speed against the tutorial's loop, throughput by
batch size, end-to-end stage timings, cold start and peak memory, all measured in this one run."""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bot.bench_render import bench_render, bench_worker
from bot.model.composer import Composer
from bot.model.network import DEFAULT_MODEL, REPO_MODELS
from bot.model.network import load as load_model
from bot.model.sample import Request, Sampler
from bot.model.train import machine_name
from bot.options import Options
from bot.render.files import write_outputs


def _say(text: str = "") -> None:
    print(text, flush=True)


def tutorial_loop_tokens_per_second(model, tokens: int) -> float:
    """The tutorial's generation: `model.predict` on the last 100 tokens, argmax, append; once per token."""
    net, vocab, cfg = model.net, model.vocab, model.config
    window = 100
    seq = [vocab.start]
    scalar = cfg.input_mode == "scalar"
    net.predict(
        np.zeros((1, window, 1) if scalar else (1, window), np.float32 if scalar else np.int32), verbose=0
    )
    t0 = time.perf_counter()
    for _ in range(tokens):
        w = np.array(seq[-window:], np.int32)
        w = np.pad(w, (window - len(w), 0))[None]
        x = (w[..., None] / float(len(vocab))).astype(np.float32) if scalar else w
        logits = net.predict(x, verbose=0)
        seq.append(int(np.argmax(logits[0] if scalar else logits[0, -1])))
    return tokens / (time.perf_counter() - t0)


def sampler_rate(sampler: Sampler, batch: int, length: int, repeats: int = 2) -> tuple[float, float, float]:
    """(notes per second, tokens per second, seconds) for `batch` requests of `length` notes, warm."""
    vocab = sampler.vocab
    reqs = [Request((vocab.start,), length, 1.0, 0.95, 1000 + i) for i in range(batch)]
    sampler.sample(reqs)  # trace and warm up this shape
    best = float("inf")
    tokens = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = sampler.sample(reqs)
        best = min(best, time.perf_counter() - t0)
        tokens = sum(len(o) for o in out)
    return batch * length / best, tokens / best, best


def compare_with_tutorial_loop(model, label: str, tutorial_tokens: int, length: int) -> None:
    sampler = Sampler(model, jit=True)
    notes_s, tokens_s, _ = sampler_rate(sampler, 1, length)
    per_note = tokens_s / notes_s
    tut_tokens_s = tutorial_loop_tokens_per_second(model, tutorial_tokens)
    tut_notes_s = tut_tokens_s / per_note
    _say(f"  {label}")
    _say(
        f"    tutorial loop (model.predict per token, {tutorial_tokens} tokens): {tut_tokens_s:8.1f} tokens/s "
        f"= {tut_notes_s:7.2f} notes/s"
    )
    _say(
        f"    this sampler, batch 1 ({length} notes):                  {tokens_s:8.1f} tokens/s "
        f"= {notes_s:7.1f} notes/s"
    )
    _say(f"    ratio: {notes_s / tut_notes_s:.0f}x   ({per_note:.2f} tokens per note in this encoding)")


def _seed_file(folder: Path) -> Path:
    from music21 import corpus

    path = folder / "seed.mid"
    corpus.parse("bach/bwv66.6").write("midi", fp=str(path))
    return path


def cold_start(model_dir: Path) -> tuple[float, float]:
    """Seconds from process start to the first sampled note, and that process's peak RSS in MiB."""
    code = (
        "import time, resource; t0 = time.time()\n"
        "from bot.model.composer import Composer\nfrom bot.options import Options\n"
        f"c = Composer({str(model_dir)!r})\n"
        "c.compose_one(Options(length=1, rng_seed=1))\n"
        "print(time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    done, rss_kib = out.stdout.split()
    return float(done) - t0, int(rss_kib) / 1024


def run_bench(args) -> None:
    quick = args.quick
    length = 100 if quick else 500
    _say(f"etude bench on {machine_name()}, {platform.python_implementation()} {platform.python_version()}")
    import tensorflow as tf

    _say(
        f"TensorFlow {tf.__version__}, devices: {', '.join(d.device_type for d in tf.config.list_physical_devices())}"
    )
    from bot.settings import get_settings

    model_dir = Path(args.model or get_settings().model_dir or DEFAULT_MODEL)

    _say("\n(a, b) the tutorial's generation loop against this sampler")
    tutorial_dir = REPO_MODELS / "baselines" / "tutorial-chorales"
    if tutorial_dir.is_dir():
        compare_with_tutorial_loop(
            load_model(tutorial_dir),
            "tutorial network (3 x LSTM 512, scalar input)",
            20 if quick else 100,
            length,
        )
    else:
        _say(f"  (no tutorial network at {tutorial_dir})")
    shipped = load_model(model_dir)
    compare_with_tutorial_loop(
        shipped,
        f"shipped model {shipped.name} ({shipped.config.layers} x LSTM {shipped.config.hidden})",
        20 if quick else 100,
        length,
    )

    _say(f"\n(c) throughput, {length}-note requests at once (shipped model)")
    composer = Composer(shipped)
    one = None
    for batch in (1, 4) if quick else (1, 4, 16, 64):
        notes_s, _, secs = sampler_rate(composer.sampler, batch, length, repeats=3)
        one = one or notes_s
        _say(
            f"  {batch:3d} requests: {secs:6.2f} s, {notes_s:8.0f} notes/s, {notes_s / one:5.1f}x one request"
        )

    runs = 3
    _say(
        f"\n(d) end to end, {length} notes with a seed, warm model (the run with the median total of {runs})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seed_path = _seed_file(tmp)
        opts = Options(length=length, rng_seed=7)
        composer.compose_one(opts, composer.seed(seed_path.read_bytes()))  # warm this shape
        timed = []
        for i in range(runs):
            t0 = time.perf_counter()
            seed = composer.seed(seed_path.read_bytes(), "seed")
            parse_s = time.perf_counter() - t0
            piece = composer.compose_one(opts, seed)
            out = write_outputs(piece, tmp / f"out{i}")
            timed.append((time.perf_counter() - t0, parse_s, piece, out))
        total, parse_s, piece, out = sorted(timed, key=lambda r: r[0])[runs // 2]
        stages = {
            "parse seed": parse_s,
            "sample": piece.timings["sample"],
            "decode": piece.timings["decode"],
            "render": piece.timings["render"],
            "  FluidSynth": piece.timings["synth"],
            "  encode": piece.timings["encode"],
            "  PNG after": piece.timings["wait_png_video"],
        }
        for name, secs in stages.items():
            _say(f"  {name:13s} {secs:6.3f} s")
        wav = out.rendered.wav
        _say(
            f"  {'total':13s} {total:6.3f} s   ({piece.seconds:.0f} s of music; .ogg {out.rendered.ogg.describe()} "
            f"{out.rendered.ogg.bytes / 2**20:.1f} MiB, .wav {wav.describe()} {wav.bytes / 2**20:.1f} MiB); "
            "all runs: " + ", ".join(f"{t[0]:.2f} s" for t in timed)
        )

    _say(f"\n(r) rendering on one core, {length}-note pieces (warm synth, in this process)")
    bench_render(composer, length)
    _say(f"\n(w) the embedded worker, {length}-note jobs (render pool of one process per core)")
    asyncio.run(bench_worker(model_dir, length, jobs=8 if quick else 32))

    _say("\n(e) cold start and memory")
    cold, child_rss = cold_start(model_dir)
    _say(f"  process start to first note: {cold:.2f} s (peak RSS of that process {child_rss:.0f} MiB)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _say(f"  peak RSS of this bench process (two models, batch 64): {rss:.0f} MiB")

    if args.redis:
        _say(f"\n(f) Redis queue at {args.redis}: {length}-note jobs through `etude worker` processes")
        asyncio.run(bench_redis(args.redis, model_dir, length, jobs=8 if quick else 32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker(url: str, model_dir: Path, log: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "MODEL_DIR": str(model_dir),
        "HEALTH_PORT": str(port),
        "BATCH_SIZE": "16",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    return proc, port


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"a worker exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("a worker did not become healthy")


async def bench_redis(url: str, model_dir: Path, length: int, jobs: int = 32) -> None:
    """Throughput of `jobs` requests through one and then two worker processes on this machine."""
    from dataclasses import asdict

    from bot.queue.broker import make_broker, register
    from bot.queue.jobs import JobSpec
    from bot.queue.redis_broker import RedisJournal, RedisProgress
    from bot.queue.scheduler import Scheduler

    broker = make_broker(url)
    task = register(broker, None)
    await broker.startup()
    progress, journal = RedisProgress(url), RedisJournal(url)
    sched = Scheduler(
        task, progress, queue_max=10_000, user_running=10_000, user_waiting=0, timeout=900, journal=journal
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 2):
            procs = [_start_worker(url, model_dir, Path(tmp) / f"worker{n}-{i}.log") for i in range(n)]
            try:
                for proc, port in procs:
                    await asyncio.to_thread(_wait_healthy, port, proc)
                specs = [
                    JobSpec(options=asdict(Options(length=length, rng_seed=i)), user_id=i)
                    for i in range(jobs)
                ]
                for s in specs:
                    sched.admit(s)
                t0 = time.perf_counter()
                results = await asyncio.gather(*(sched.run(s) for s in specs))
                secs = time.perf_counter() - t0
                ok = sum(r.ok for r in results)
                for r in results:
                    await journal.remove(r.job_id)
                _say(
                    f"  {n} worker{'s' if n > 1 else ' '}: {jobs} jobs in {secs:6.2f} s = {jobs / secs:5.2f} jobs/s, "
                    f"{ok * length / secs:7.0f} notes/s end to end (sampling, audio, picture), {ok}/{jobs} ok"
                )
            finally:
                for proc, _ in procs:
                    proc.send_signal(signal.SIGTERM)
                for proc, _ in procs:
                    proc.wait(60)
    await progress.close()
    await journal.close()
    await broker.shutdown()
