"""Redis mode as real processes, for the tests and scripts/soak.py: a redis-server on loopback, `etude worker`
processes, and the bot's side of the queue (job stream, results, progress, journal, scheduler) against them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bot.queue.redis_state import RedisJournal, RedisProgress
from bot.queue.results import RedisResults
from bot.queue.scheduler import Scheduler
from bot.queue.streams import JobStream

RECLAIM = 3.0  # RECLAIM_SECONDS of the workers and the scheduler: short, so that reclaiming is quick to see


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server on loopback, restartable on the same port and data: AOF persistence (fsync'd on each
    write unless told otherwise) or none, an optional password, a free port or one chosen beforehand."""

    def __init__(
        self,
        folder: Path,
        *,
        persist: bool = True,
        fsync: str = "always",
        password: str | None = None,
        port: int = 0,
    ):
        self.folder, self.port = folder, port or free_port()
        self.persist, self.fsync, self.password = persist, fsync, password
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.folder), "--appendonly", "yes" if self.persist else "no"]
        args += ["--appendfsync", self.fsync]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Ready when it answers PING, or, with a password, refuses it for want of one (not while it is
        # still loading its data, which it also answers with an error).
        ready = (b"+PONG", b"-NOAUTH") if self.password else (b"+PONG",)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(ready):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


class Workers:
    """`etude worker` processes, each with its own health port."""

    def __init__(self, url: str, model_dir: Path, log_dir: Path):
        self.url, self.model_dir, self.log_dir = url, model_dir, log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, **extra: str) -> None:
        port = free_port()
        tmp = self.log_dir / "tmp"  # the workers' temporary folders, apart from the machine's
        tmp.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "REDIS_URL": self.url,
            "MODEL_DIR": str(self.model_dir),
            "HEALTH_PORT": str(port),
            "RECLAIM_SECONDS": str(RECLAIM),
            "BATCH_SIZE": "8",
            "BATCH_WAIT_MS": "50",
            "WARM_LENGTH": "150",  # the tests' jobs are 120-200 notes long: one compiled buffer size
            "STOP_DEADLINE_SECONDS": "20",
            "TMPDIR": str(tmp),
            **extra,
        }
        log = open(self.log_dir / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.ports[name] = port

    def wait_healthy(self, timeout: float = 120, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for name, port in self.ports.items():
            if names is not None and name not in names:
                continue
            while True:
                assert self.procs[name].poll() is None, (self.log_dir / f"{name}.log").read_text()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"worker {name} not healthy"
                time.sleep(0.2)

    def metrics(self, name: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5) as r:
            return r.read().decode()

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        self.procs.clear()
        self.ports.clear()


async def scheduler_for(url: str) -> Scheduler:
    """The bot's side of the queue, without Discord: stream, results, progress, journal, scheduler on `url`."""
    stream = JobStream(url, reclaim_seconds=RECLAIM)
    await stream.start()
    return Scheduler(
        stream,
        RedisResults(url),
        RedisProgress(url),
        queue_max=200,
        user_running=100,
        user_waiting=100,
        timeout=300,
        journal=RedisJournal(url),
    )


async def close(sched: Scheduler) -> None:
    await sched.progress.close()
    await sched.journal.close()
    await sched.queue.close()
    await sched.results.close()


async def run_all(sched: Scheduler, specs, on_event=None, finished: dict | None = None):
    """Admit every job, then run them all at once; `finished` gets each job's end time."""
    for s in specs:
        sched.admit(s)

    async def one(s):
        async def progress(e):
            if on_event:
                await on_event(s, e)

        result = await sched.run(s, progress)
        if finished is not None:
            finished[s.job_id] = time.monotonic()
        return result

    return await asyncio.gather(*(one(s) for s in specs))


async def drained(redis, poll: float = 0.05) -> None:
    """Wait until the job stream is empty: a worker stores a result before it deletes the job's entry, so
    whoever reads the result first may find the entry still there for a moment."""
    from bot.queue.redis_keys import STREAM

    while await redis.xlen(STREAM):
        await asyncio.sleep(poll)


async def settled(sched: Scheduler, poll: float = 0.05) -> None:
    """Wait until the queue is quiescent: no job waiting, running or being answered, the journal empty and,
    in Redis mode, the stream empty. Past it no answer is on its way, so "exactly once" can be counted.

    Polls a state, not the clock: the test's own timeout bounds the wait.
    """
    from bot.queue.redis_keys import STREAM

    redis = getattr(sched.journal, "redis", None)
    while (
        sched.in_flight()
        or sched.answering
        or await sched.journal.pending()
        or (redis is not None and await redis.xlen(STREAM))
    ):
        await asyncio.sleep(poll)
