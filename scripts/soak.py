"""Soak: the whole system under faults for a while, then the figures that say whether anything was lost.

A real redis-server (AOF), the bot (`python -m bot bot`) and two workers (`python -m bot worker`) as
processes, the fake Discord of the tests on loopback. Users send /compose at a steady rate; every
`--kill-every` seconds one worker is SIGKILLed and started again; Redis is restarted once half-way; Discord
answers 500 to `--upload-failures` of the uploads. At the end it waits for the queue to drain and prints
one JSON object: jobs submitted, delivered, delivered twice, run twice, lost, users told of a failure,
Redis memory at the start and the end, the worst time from a worker's death to the delivery of the jobs it
held, and the bot's peak RSS.

    python scripts/soak.py --minutes 10 --jobs 200            # the issue's soak
    python scripts/soak.py --minutes 2 --jobs 30 --kill-every 40   # a short one
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakediscord import FakeDiscord  # noqa: E402
from processes import RedisServer  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from bot.queue.redis_keys import GROUP, STREAM  # noqa: E402


def peak_rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text)[1]) / 1024


async def main(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="etude-soak-"))
    redis_server = RedisServer(work, fsync="everysec")
    redis_server.start()
    redis = Redis.from_url(redis_server.url)
    memory_start = (await redis.info("memory"))["used_memory"]
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "RECLAIM_SECONDS": str(args.reclaim),
        "STATE_DIR": str(work / "state"),
        "TMPDIR": str(work),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    if args.model:
        env["MODEL_DIR"] = args.model
    logs: dict[str, object] = {}

    def spawn(name: str, *cmd: str, extra: dict | None = None) -> subprocess.Popen:
        logs[name] = open(work / f"{name}.log", "ab")
        return subprocess.Popen(
            [sys.executable, "-m", "bot", *cmd],
            env={**env, **(extra or {})},
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            cwd=args.root,
        )

    async with FakeDiscord() as fake:
        fake.fail_share("POST /api/v10/webhooks/", args.upload_failures, status=500, seed=1)
        bot_env = {
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "QUEUE_MAX": str(args.jobs),
            "USER_MAX_WAITING": "5",
        }
        bot = spawn("bot", "bot", extra=bot_env)
        workers = {name: spawn(name, "worker") for name in ("w1", "w2")}
        for _ in range(1200):
            try:
                fake.registered_command("compose")
                break
            except Exception:
                await asyncio.sleep(0.1)
        rng = random.Random(7)
        inters = []
        seeds: dict[str, int] = {}  # token -> the job's rng seed, shown in its embed
        deaths: list[tuple[float, list[str]]] = []  # kill time, tokens of the jobs the worker held
        t0 = time.monotonic()
        duration = args.minutes * 60
        gap = duration / args.jobs
        next_kill, restarted = t0 + args.kill_every, False
        for i in range(args.jobs):
            user = fake.user(1000 + i % 60)
            inters.append(
                await fake.send_command(
                    "compose", {"length": rng.choice((60, 120, 200)), "rng_seed": i}, user=user
                )
            )
            seeds[inters[-1].token] = i
            now = time.monotonic()
            if now >= next_kill:
                # The worker holding the most jobs dies: a kill of an idle worker tests nothing. When both
                # are idle the kill waits for one that is busy, at most half a period.
                holding = {n: await held_tokens(redis, w.pid) for n, w in workers.items()}
                name = max(holding, key=lambda n: len(holding[n]))
                if holding[name] or now >= next_kill + args.kill_every / 2:
                    workers[name].kill()
                    workers[name].wait()
                    deaths.append((time.monotonic(), holding[name]))
                    workers[name] = spawn(name, "worker")
                    next_kill += args.kill_every
            if args.redis_restart and not restarted and now - t0 > duration / 2:
                restarted = True
                await redis.aclose()
                redis_server.stop()
                await asyncio.sleep(1)
                redis_server.start()
                redis = Redis.from_url(redis_server.url)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * gap - time.monotonic()))
        # Drain: everything answered or the patience is spent.
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            if all(answered(fake, x, seeds) for x in inters):
                break
            await asyncio.sleep(1)
        await asyncio.sleep(3)  # a late duplicate would show now
        bot_peak = peak_rss_mib(bot.pid)
        memory_end = (await redis.info("memory"))["used_memory"]
        stream_left = await redis.xlen(STREAM)
        runs = Counter()
        for name in ("w1", "w2"):
            for line in (work / f"{name}.log").read_text(errors="replace").splitlines():
                m = re.search(r"job ([0-9a-f]{12}) (ok|failed)", line)
                if m:
                    runs[m[1]] += 1
        by_token = {x.token: x for x in inters}
        worst = 0.0
        for killed_at, tokens in deaths:
            for token in tokens:
                x = by_token.get(token)
                t = delivered_at(fake, x, seeds) if x else None
                if t is not None:
                    worst = max(worst, t - killed_at)
        for p in [bot, *workers.values()]:
            p.send_signal(signal.SIGTERM)
        for p in [bot, *workers.values()]:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        counts = [pieces(fake, x, seeds) for x in inters]
        result = {
            "minutes": args.minutes,
            "jobs_submitted": len(inters),
            "accepted": sum(1 for x in inters if x.callback and x.callback["body"]["type"] == 5),
            "delivered": sum(1 for c in counts if c >= 1),
            "delivered_twice": sum(1 for c in counts if c > 1),
            "run_twice": sum(1 for n in runs.values() if n > 1),
            "lost": sum(1 for x in inters if not answered(fake, x, seeds)),
            "told_of_a_failure": sum(1 for x in inters if failure_told(fake, x, seeds)),
            "workers_killed": len(deaths),
            "jobs_held_by_killed_workers": sum(len(held) for _, held in deaths),
            "redis_restarts": 1 if restarted else 0,
            "upload_failures_injected": sum(1 for e in fake.log if e.get("injected")),
            "worst_death_to_delivery_s": round(worst, 1),
            "redis_used_memory_start": memory_start,
            "redis_used_memory_end": memory_end,
            "stream_entries_left": stream_left,
            "bot_peak_rss_mib": round(bot_peak, 1),
            "logs": str(work),
        }
        redis_server.stop()
        return result


async def held_tokens(redis: Redis, pid: int) -> list[str]:
    """Interaction tokens of the jobs a worker holds (read and not acknowledged), from Redis itself."""
    tokens = []
    try:
        consumers = await redis.xinfo_consumers(STREAM, GROUP)
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            if not name.endswith(f":{pid}"):
                continue
            pending = await redis.xpending_range(STREAM, GROUP, "-", "+", 1000, consumername=name)
            for p in pending:
                for _id, fields in await redis.xrange(STREAM, p["message_id"], p["message_id"]):
                    tokens.append(json.loads(fields[b"data"])["spec"]["interaction_token"])
    except Exception as e:  # the figure is then missing for this death, the soak goes on
        print(f"could not read what worker {pid} held: {e}", file=sys.stderr)
    return tokens


def posts(fake: FakeDiscord, x, seeds) -> list[dict]:
    """Successful follow-ups and channel messages that answer interaction `x` (a piece in the channel is
    known by the RNG seed in its embed; a failure there by its mention)."""
    out = [e for e in x.events if e["kind"] == "followup" and e["status"] < 300]
    user = (x.payload.get("member") or {}).get("user", {}).get("id") or (x.payload.get("user") or {}).get(
        "id"
    )
    for e in fake.log:
        if e["kind"] != "channel_message" or e["status"] >= 300:
            continue
        body = e.get("body") or {}
        fields = {f["name"]: f["value"] for em in body.get("embeds") or [] for f in em.get("fields", [])}
        if fields.get("RNG seed") == f"`{seeds[x.token]}`" or (
            not e.get("files") and f"<@{user}>" in (body.get("content") or "")
        ):
            out.append(e)
    return out


def pieces(fake: FakeDiscord, x, seeds) -> int:
    return sum(1 for e in posts(fake, x, seeds) if e.get("files"))


def answered(fake: FakeDiscord, x, seeds) -> bool:
    return bool(x.callback and x.callback["body"]["type"] == 4) or bool(posts(fake, x, seeds))


def failure_told(fake: FakeDiscord, x, seeds) -> bool:
    return any(not e.get("files") for e in posts(fake, x, seeds))


def delivered_at(fake: FakeDiscord, x, seeds) -> float | None:
    times = [e["time"] for e in posts(fake, x, seeds) if e.get("files")]
    return min(times) if times else None


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--jobs", type=int, default=200)
    p.add_argument("--kill-every", type=float, default=120, help="seconds between worker kills")
    p.add_argument("--upload-failures", type=float, default=0.10, help="share of uploads answered 500")
    p.add_argument("--reclaim", type=float, default=5, help="RECLAIM_SECONDS for the run")
    p.add_argument("--drain", type=float, default=300, help="seconds to wait for the last answers")
    p.add_argument("--model", help="model folder (default: the shipped model)")
    p.add_argument("--no-redis-restart", dest="redis_restart", action="store_false")
    p.add_argument("--root", default=str(ROOT), help="run the bot and workers of this checkout")
    print(json.dumps(asyncio.run(main(p.parse_args())), indent=2))
