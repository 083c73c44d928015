"""`etude bench`: numbers, not tests. Prints the sampler's speed against the tutorial's loop, throughput by
batch size, training speed, end-to-end stage timings, cold start and peak memory, all measured in this one
run on this machine's Keras backend and device.

The sampler and training sections need only numpy and Keras on its backend (no music21, mido, pydantic or
discord), so they run on a bare GPU machine: `etude bench --sections sampler,train`.
"""

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

from bot.cards import DEFAULT_MODEL, REPO_MODELS
from bot.errors import ModelNotFound
from bot.model import backend
from bot.model.backend import machine_name
from bot.model.network import load as load_model
from bot.model.sample import Request, Sampler

SECTIONS = ("sampler", "train", "e2e", "render", "perform", "worker", "cold")
CPU_BATCHES, GPU_BATCHES = (1, 4, 16, 64), (1, 16, 256, 1024, 4096)
CPU_TRAIN_BATCHES, GPU_TRAIN_BATCHES = (32,), (32, 256, 1024)


def _say(text: str = "") -> None:
    print(text, flush=True)


def tutorial_loop_tokens_per_second(model, tokens: int) -> float:
    """The tutorial's generation: `model.predict` on the last 100 tokens, argmax, append; once per token."""
    net, vocab, cfg = model.net, model.vocab, model.config
    window = 100
    seq = [vocab.start]
    scalar = cfg.input_mode == "scalar"
    net.predict(
        np.zeros((1, window, 1), np.float32) if scalar else model.inputs(np.zeros((1, window), np.int32)),
        verbose=0,
    )
    t0 = time.perf_counter()
    for _ in range(tokens):
        w = np.array(seq[-window:], np.int32)
        w = np.pad(w, (window - len(w), 0))[None]
        x = (w[..., None] / float(len(vocab))).astype(np.float32) if scalar else model.inputs(w)
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


def compare_with_tutorial_loop(model, label: str, tutorial_tokens: int, length: int) -> Sampler:
    sampler = Sampler(model)
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
    return sampler


def training_rate(model, tokens: list[np.ndarray], batch: int, steps: int) -> float:
    """Training tokens per second of a fresh network shaped like `model`, at `batch` windows a step."""
    from dataclasses import replace

    from bot.model import network as M
    from bot.model.train import steps_per_execution
    from bot.music.corpus import windows

    config = replace(model.config, batch_size=batch)
    w = windows(tokens, config.seq_len)
    w = np.resize(w, ((steps + 1) * batch, w.shape[1]))  # repeated as often as the steps need
    x, y = w[:, :-1], w[:, 1:]
    weight = (y != 0).astype("float32")
    net = M.build(config)
    M.compile_model(net, config)
    net.steps_per_execution = min(steps, steps_per_execution())
    first = slice(0, batch * net.steps_per_execution)
    net.fit(x[first], y[first], sample_weight=weight[first], batch_size=batch, verbose=0)  # compile
    rest = slice(batch, None)
    t0 = time.perf_counter()
    net.fit(x[rest], y[rest], sample_weight=weight[rest], batch_size=batch, verbose=0, shuffle=False)
    return steps * batch * config.seq_len / (time.perf_counter() - t0)


def bench_training(model, sampler: Sampler, quick: bool, tokens_file: str | None, on_gpu: bool) -> None:
    """(d) training speed of the shipped architecture, on a tokens file or on pieces the model samples."""
    if tokens_file:
        from bot.model.train import load_tokens

        tokens = load_tokens(Path(tokens_file)).train
        where = f"{len(tokens)} pieces of {tokens_file}"
    else:  # any tokens will do for a speed figure; these need no corpus and no music21
        reqs = [Request((model.vocab.start,), 200, 1.0, 0.95, 500 + i) for i in range(16)]
        tokens = [np.array([model.vocab.start, *t], np.int32) for t in sampler.sample(reqs)]
        where = "16 pieces of 200 notes sampled by the model itself"
    batches = GPU_TRAIN_BATCHES if on_gpu else CPU_TRAIN_BATCHES
    steps = 64 if on_gpu else (2 if quick else 6)
    _say(f"\n(d) training the shipped architecture ({model.config.seq_len}-token windows, {where})")
    for batch in batches:
        rate = training_rate(model, tokens, batch, steps)
        _say(f"  batch {batch:5d}: {rate:12,.0f} tokens/s  ({steps} steps)")


def _seed_bytes(composer) -> bytes:
    """A seed MIDI file for the end-to-end run: 32 notes the model writes itself (no corpus needed)."""
    from bot.options import Options

    return composer.compose_one(Options(length=32, rng_seed=4242)).midi()


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


def _model_dir(args) -> Path:
    if args.model:
        return Path(args.model)
    try:  # settings need pydantic, which a bare GPU machine lacks; there the shipped model is the default
        from bot.settings import get_settings
    except ImportError:
        return DEFAULT_MODEL
    return Path(get_settings().model_dir or DEFAULT_MODEL)


def bench_harmonize(model_dir: Path, notes: int = 100, runs: int = 5) -> None:
    """A melody of `notes` notes harmonized end to end: read from MIDI bytes, sampled, written as MIDI."""
    from bot.model.composer import Composer
    from bot.model.harmonize import harmonize
    from bot.model.steps import PARTICLES
    from bot.music.events import Event
    from bot.music.melody import read_melody
    from bot.music.midi_out import midi_bytes
    from bot.options import Options
    from bot.render.files import write_outputs

    _say(f"\n(g) harmonize: {notes} melody notes, {PARTICLES} particles, warm model (median of {runs})")
    # A chorale-like line: a scale up and down in quarters and halves, with a rest every eight notes.
    line, t = [], 0.0
    for i in range(notes):
        step = i % 14
        pitch = 67 + [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2][step]
        length = 2.0 if i % 8 == 7 else 1.0
        line.append(Event(t, length, (pitch,)))
        t += length + (1.0 if i % 8 == 7 else 0.0)
    data = midi_bytes(line, tempo=90)
    composer = Composer(load_model(model_dir))
    harmonize(composer, Options(rng_seed=0), read_melody(data, "warm"))
    timed = []
    for i in range(runs):
        t0 = time.perf_counter()
        melody = read_melody(data, "bench")
        parse_s = time.perf_counter() - t0
        piece = harmonize(composer, Options(rng_seed=i), melody)
        midi = piece.midi()
        timed.append((time.perf_counter() - t0, parse_s, piece.timings["sample"], len(midi)))
    total, parse_s, sample_s, _ = sorted(timed)[runs // 2]
    _say(f"  read melody {parse_s:6.3f} s")
    _say(f"  sample      {sample_s:6.3f} s")
    _say(
        f"  total       {total:6.3f} s   (MIDI written; all runs: {', '.join(f'{r[0]:.2f} s' for r in timed)})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_outputs(piece, Path(tmp))
        _say(f"  audio and piano roll besides: {time.perf_counter() - t0:.2f} s")


def run_bench(args) -> None:
    if getattr(args, "harmonize", False):
        _say(f"etude bench on {machine_name()}")
        bench_harmonize(_model_dir(args))
        return
    quick = args.quick
    sections = set(args.sections.split(",")) if args.sections else set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        from bot.errors import BadOption

        raise BadOption(
            f"unknown bench section {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}"
        )
    length = 100 if quick else 500
    # The sections that serve (sampling, end to end, the worker) measure what a worker runs, on its threads
    # (`backend.serving`). A process has one thread count and training uses every core, so a run that
    # trains measures everything on every core, and says so.
    if "train" not in sections:
        backend.serving()
    _say(f"etude bench on {machine_name()}, {platform.python_implementation()} {platform.python_version()}")
    _say(backend.describe())
    on_gpu = backend.accelerator() is not None
    if "train" in sections and sections - {"train"} and not on_gpu:
        _say(
            "  (every section on every core, as training needs; a worker samples on SAMPLER_THREADS, "
            "measured by `etude bench --sections sampler,e2e`)"
        )
    model_dir = _model_dir(args)
    shipped = load_model(model_dir)
    sampler = None

    if "sampler" in sections:
        _say("\n(a, b) the tutorial's generation loop against this sampler")
        tutorial_dir = REPO_MODELS / "baselines" / "tutorial-chorales"
        try:
            tutorial = load_model(tutorial_dir)
        except ModelNotFound as e:  # absent, or of an older token encoding
            _say(f"  (no tutorial network to compare: {e})")
        else:
            compare_with_tutorial_loop(
                tutorial, "tutorial network (3 x LSTM 512, scalar input)", 20 if quick else 100, length
            )
        sampler = compare_with_tutorial_loop(
            shipped,
            f"shipped model {shipped.name} ({shipped.config.layers} x LSTM {shipped.config.hidden})",
            20 if quick else 100,
            length,
        )
        batches = [int(b) for b in args.batches.split(",")] if args.batches else None
        batches = batches or (GPU_BATCHES if on_gpu else CPU_BATCHES[: 2 if quick else None])
        _say(f"\n(c) throughput, {length}-note requests at once (shipped model)")
        one = None
        for batch in batches:
            notes_s, _, secs = sampler_rate(sampler, batch, length, repeats=3)
            one = one or notes_s
            _say(
                f"  {batch:5d} requests: {secs:7.3f} s, {notes_s:11,.0f} notes/s, {notes_s / one:7.1f}x one request"
            )

    if "train" in sections:
        bench_training(shipped, sampler or Sampler(shipped), quick, args.tokens, on_gpu)

    if "e2e" in sections:
        bench_end_to_end(shipped, length)

    if sections & {"render", "perform", "worker"}:
        from bot.bench.render import bench_render, bench_worker  # FluidSynth, ffmpeg, the queue

        if "render" in sections:
            from bot.model.composer import Composer

            _say(f"\n(r) rendering on one core, {length}-note pieces (warm synth, in this process)")
            bench_render(Composer(shipped), length)
        if "perform" in sections:
            from bot.bench.perform import bench_perform
            from bot.model.composer import Composer

            _say(f"\n(p) the performance: {length}-note pieces played plain and expressive, .ogg on one core")
            bench_perform(Composer(shipped), length)
        if "worker" in sections:
            _say(f"\n(w) the embedded worker, {length}-note jobs (render pool of one process per core)")
            asyncio.run(bench_worker(model_dir, length, jobs=8 if quick else 32))

    if "cold" in sections:
        _say("\n(f) cold start and memory")
        cold, child_rss = cold_start(model_dir)
        _say(f"  process start to first note: {cold:.2f} s (peak RSS of that process {child_rss:.0f} MiB)")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _say(f"  peak RSS of this bench process: {rss:.0f} MiB")

    loaded = [m for m in ("tensorflow", "jax", "music21", "mido", "pydantic", "discord") if m in sys.modules]
    _say(f"\nmodules this run loaded: {', '.join(loaded) or 'none of the heavy ones'}")

    if args.redis:
        _say(f"\n(g) Redis queue at {args.redis}: {length}-note jobs through `etude worker` processes")
        asyncio.run(bench_redis(args.redis, model_dir, length, jobs=8 if quick else 32))


def bench_end_to_end(shipped, length: int, runs: int = 3) -> None:
    """(e) one request through every stage, seed to files; needs mido, FluidSynth and matplotlib."""
    from bot.model.composer import Composer
    from bot.options import Options
    from bot.render.files import write_outputs

    _say(
        f"\n(e) end to end, {length} notes with a seed, warm model (the run with the median total of {runs})"
    )
    composer = Composer(shipped)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seed_data = _seed_bytes(composer)
        opts = Options(length=length, rng_seed=7)
        composer.compose_one(opts, composer.seed(seed_data))  # warm this shape
        timed = []
        for i in range(runs):
            t0 = time.perf_counter()
            seed = composer.seed(seed_data, "seed")
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

    from bot.options import Options
    from bot.queue.jobs import JobSpec
    from bot.queue.redis_state import RedisJournal, RedisProgress
    from bot.queue.results import RedisResults
    from bot.queue.scheduler import Scheduler
    from bot.queue.streams import JobStream

    stream, store = JobStream(url), RedisResults(url)
    await stream.start()
    progress, journal = RedisProgress(url), RedisJournal(url)
    sched = Scheduler(
        stream,
        store,
        progress,
        queue_max=10_000,
        user_running=10_000,
        user_waiting=0,
        timeout=900,
        journal=journal,
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
                    await sched.answered(r.job_id, delivered=False)
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
    await stream.close()
    await store.close()
