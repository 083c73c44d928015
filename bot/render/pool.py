"""A warm render pool: one process per core, each holding a FluidSynth with the soundfont loaded.

A render process is `python -m bot.render.pool`: it loads the soundfont, renders every key once so the
first real job finds everything imported and paged in, says it is ready, then renders requests one at a
time. Requests and results are pickles framed by their length on the process's stdin and stdout; the pool
starts these processes itself, so what it unpickles is its own.

Every render runs under a deadline. A process that misses it is killed; one that dies (a crash in the
synthesizer) is noticed at once. Either way only that render is lost: the caller gets a RenderError, a new
process takes the old one's place in the background, and the next job renders normally.

A caller may hold several processes at once (`lease`) to play one piece in parts on several cores
(`render_on`): the first process is waited for, the others are taken only when idle, so a
busy pool gives each piece one process and the parts never hold up another job.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bot.errors import RenderError
from bot.options import UPLOAD_LIMIT_BYTES
from bot.render.files import MixRequest, PartRequest, Rendered, RenderRequest, render_piece
from bot.render.lifeline import die_with_parent, start_child
from bot.render.parts import cores, split_midi
from bot.render.synth import Synth, SynthSettings

log = logging.getLogger(__name__)

HEADER = struct.Struct("<Q")
DEFAULT_TARGET = "bot.render.files:serve_request"
START_TIMEOUT = 60.0  # loading a soundfont from a cold disk; far above the 0.3 s it takes warm
RESTART_DELAY = 5.0  # between attempts to replace a process when starting one fails


class _Dead(Exception):
    """The render process exited or closed its pipe."""


def _write(stream, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise _Dead
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(fd: int, deadline: float | None) -> object:
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


# The folder holding this `bot` package: a render process imports the same code as the one that starts it.
CODE_ROOT = str(Path(__file__).resolve().parents[2])


class _Process:
    """One render process and its pipes."""

    def __init__(self, soundfont: Path, target: str):
        path = os.environ.get("PYTHONPATH")
        # Its temporary files go into this process's temp folder: a worker killed outright takes its render
        # processes with it (`lifeline`), and the next worker's start-up deletes the folder.
        env = {
            **os.environ,
            "PYTHONPATH": CODE_ROOT + (os.pathsep + path if path else ""),
            "TMPDIR": tempfile.gettempdir(),
        }
        args = ["--soundfont", str(soundfont), "--target", target, "--parent", str(os.getpid())]
        self.proc = start_child(
            lambda: subprocess.Popen(
                [sys.executable, "-m", "bot.render.pool", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,  # its log lines go where this process's go
                env=env,
            )
        )

    def ready(self, timeout: float) -> None:
        """Wait for the process's hello: RenderError with its one-line reason when it could not start."""
        try:
            status = _read(self.proc.stdout.fileno(), time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            raise RenderError("a render process did not start in time") from None
        except _Dead:
            self.kill()
            raise RenderError("a render process exited while starting") from None
        if status != "ready":
            self.kill()
            raise RenderError(str(status))

    def call(self, request: object, timeout: float) -> object:
        _write(self.proc.stdin, request)
        return _read(self.proc.stdout.fileno(), time.monotonic() + timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid


class RenderPool:
    """`size` warm render processes; `render` is thread-safe and blocks until one is free.

    `target` names the function the processes call as `module:function`, with `(request, synth)`; tests
    name one that hangs or crashes to see the pool recover.
    """

    def __init__(
        self,
        soundfont: Path,
        size: int | None = None,
        timeout: float = 120.0,
        target: str = DEFAULT_TARGET,
    ):
        self.soundfont, self.size, self.timeout, self.target = (
            Path(soundfont),
            size or cores(),
            timeout,
            target,
        )
        self.idle: queue.Queue[_Process] = queue.Queue()
        self.all: set[_Process] = set()
        self.lock = threading.Lock()
        self.closed = False
        self.replaced = 0  # processes killed or lost and replaced: a metric, and what the tests look at

    def start(self) -> None:
        """Start every process and wait for all to be warm; RenderError (one line) if any cannot start."""
        t0 = time.perf_counter()
        started = [_Process(self.soundfont, self.target) for _ in range(self.size)]
        try:
            for p in started:
                p.ready(START_TIMEOUT)
        except RenderError:
            for p in started:
                p.kill()
            raise
        with self.lock:
            self.all.update(started)
        for p in started:
            self.idle.put(p)
        log.info("render pool: %d processes warm in %.2f s", self.size, time.perf_counter() - t0)

    @contextmanager
    def lease(self, most: int = 1) -> Iterator[Lease]:
        """Processes held for one piece: the first waited for, up to `most - 1` more taken if idle now."""
        if self.closed:
            raise RenderError("the renderer is shut down")
        procs = [self.idle.get()]
        while len(procs) < most:
            try:
                procs.append(self.idle.get_nowait())
            except queue.Empty:
                break
        held = Lease(self, procs)
        try:
            yield held
        finally:
            held.keep(0)

    def render(self, request: object, timeout: float | None = None) -> object:
        """`target(request, synth)` in a free process; RenderError when it fails, hangs or crashes."""
        with self.lease() as held:
            return held.call([request], time.monotonic() + (timeout or self.timeout))[0]

    def _replace(self, proc: _Process, why: str) -> None:
        log.warning("render process %d %s: replacing it", proc.pid, why)
        proc.kill()
        with self.lock:
            self.all.discard(proc)
            self.replaced += 1
        threading.Thread(target=self._spawn, name="etude-render-restart", daemon=True).start()

    def _spawn(self) -> None:
        while not self.closed:
            try:
                proc = _Process(self.soundfont, self.target)
                proc.ready(START_TIMEOUT)
            except (RenderError, OSError) as e:
                log.error("a render process could not start: %s; trying again", e)
                time.sleep(RESTART_DELAY)
                continue
            with self.lock:
                if self.closed:
                    proc.kill()
                    return
                self.all.add(proc)
            self.idle.put(proc)
            return

    def pids(self) -> set[int]:
        with self.lock:
            return {p.pid for p in self.all}

    def close(self) -> None:
        self.closed = True
        with self.lock:
            procs, self.all = list(self.all), set()
        for p in procs:
            p.kill()


class Lease:
    """Render processes held by one caller (`RenderPool.lease`); `call` runs requests on them at once."""

    def __init__(self, pool: RenderPool, procs: list[_Process]):
        self.pool, self.procs = pool, procs

    def __len__(self) -> int:
        return len(self.procs)

    def keep(self, count: int) -> None:
        """Give all but the first `count` processes back to the pool."""
        for proc in self.procs[count:]:
            self.pool.idle.put(proc)
        del self.procs[count:]

    def _lose(self, proc: _Process, why: str) -> None:
        self.procs.remove(proc)
        self.pool._replace(proc, why)

    def call(self, requests: Sequence[object], deadline: float) -> list[object]:
        """`requests[i]` on process i, all at once, each answered by `deadline` (a `time.monotonic()`).

        A process that misses it or dies is replaced; once every process has answered or been replaced,
        the first failure is raised as a RenderError, so no answer is left unread in a pipe.
        """
        error: RenderError | None = None
        sent = []
        for proc, request in zip(list(self.procs), requests, strict=False):
            try:
                _write(proc.proc.stdin, request)
                sent.append(proc)
            except BrokenPipeError:
                self._lose(proc, "crashed")
                error = error or RenderError("the renderer crashed")
        results = []
        for i, proc in enumerate(sent):
            try:
                results.append(_read(proc.proc.stdout.fileno(), deadline))
            except TimeoutError:
                self._lose(proc, "took too long")
                error = error or RenderError("rendering took too long")
            except _Dead:
                self._lose(proc, "crashed")
                error = error or RenderError("the renderer crashed")
            except BaseException:  # a caller interrupted mid-call: these processes' state is unknown
                for unread in sent[i:]:
                    self._lose(unread, "was interrupted")
                raise
        if error is not None:
            raise error
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results


def render_on(pool: RenderPool, request: RenderRequest, timeout: float | None = None) -> Rendered:
    """`request` rendered by the pool: in parts on as many of its processes as are idle, else in one."""
    deadline = time.monotonic() + (timeout or pool.timeout)
    with pool.lease(most=pool.size) as held:
        parts = split_midi(request.midi, len(held), SynthSettings().sample_rate) if len(held) > 1 else []
        if len(parts) <= 1:
            return held.call([request], deadline)[0]
        held.keep(len(parts))  # what the piece is too short to use goes back at once
        with tempfile.TemporaryDirectory(prefix="etude-parts-") as tmp:
            paths = [str(Path(tmp) / f"part{i}.f32") for i in range(len(parts))]
            held.call([PartRequest(request.name, p.midi, path) for p, path in zip(parts, paths)], deadline)
            held.keep(1)
            mixed = MixRequest(request, tuple((p.offset, path) for p, path in zip(parts, paths)))
            return held.call([mixed], deadline)[0]


# -- the render process ----------------------------------------------------------------------------------


def _warm_request():
    from bot.music.events import Event
    from bot.music.midi_out import midi_bytes

    # Every key of the piano, soft and loud: FluidSynth loads a sample when a note first needs it, so a
    # process warmed on one chord would load most of the piano during its first real piece (0.12 s).
    events = tuple(
        Event(
            i * 0.25, 0.25, tuple(range(21 + (i % 8) * 11, min(109, 32 + (i % 8) * 11))), 64 if i < 8 else 100
        )
        for i in range(16)
    )
    return RenderRequest("warm", midi_bytes(list(events)), events, 0, 100.0, "warm", UPLOAD_LIMIT_BYTES)


def serve(soundfont: Path, target: Callable[[object, object], object]) -> None:
    """Load the synth, warm up, say "ready", then answer requests on stdin until it closes."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the pipe
    try:
        synth = Synth(soundfont)
        render_piece(
            _warm_request(), synth
        )  # imports, soundfont pages, matplotlib's fonts, ffmpeg's disk cache
    except Exception as e:  # noqa: BLE001 - the parent shows the reason as one line
        _write(out, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    _write(out, "ready")
    fd = sys.stdin.buffer.fileno()
    while True:
        try:
            request = _read(fd, None)
        except _Dead:
            return
        try:
            result = target(request, synth)
        except Exception as e:  # noqa: BLE001 - sent back and raised in the caller
            result = e if isinstance(e, RenderError) else RenderError(f"rendering failed: {e}")
            log.exception("render failed")
        _write(out, result)


def _main() -> None:
    p = argparse.ArgumentParser(description="a render process of the pool (started by RenderPool)")
    p.add_argument("--soundfont", required=True)
    p.add_argument("--target", default=DEFAULT_TARGET)
    p.add_argument("--parent", type=int, help="die with this process")
    args = p.parse_args()
    if args.parent:
        die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module, _, name = args.target.partition(":")
    serve(Path(args.soundfont), getattr(importlib.import_module(module), name))


if __name__ == "__main__":
    _main()
