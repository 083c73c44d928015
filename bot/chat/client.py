"""`etude bot`: the discord.py client, its job runtime (embedded worker or Redis), and start-up."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import discord
from discord.ext import commands
from discord.http import Route

from bot.aio import Stopped, unless_stopped
from bot.errors import BadOption
from bot.health import Metrics, serve
from bot.queue.broker import make_broker, register
from bot.queue.interfaces import Broker, Progress
from bot.queue.scheduler import LocalProgress, Scheduler
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.worker.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The queue as the bot sees it: a broker, a progress channel, a scheduler, and maybe a worker."""

    broker: Broker
    progress: Progress
    scheduler: Scheduler
    worker: Worker | None = None  # the embedded worker; None when `etude worker`s serve a Redis queue

    @classmethod
    async def start(cls, settings: Settings, on_wait=None) -> Runtime:
        """Start the queue; in Redis mode wait for Redis (`on_wait(attempt)` after each failed try)."""
        broker = make_broker(
            settings.redis_url,
            settings.reclaim_seconds,
            settings.batch_size or 16,
            settings.embedded_result_seconds,
        )
        worker = None
        if settings.redis_url:
            from bot.queue.redis_state import RedisJournal, RedisProgress, wait_for_redis

            await wait_for_redis(settings.redis_url, on_wait)
            progress = RedisProgress(settings.redis_url)
            journal = RedisJournal(settings.redis_url)
            task = register(broker, _remote_only)
        else:
            from bot.queue.journal import SQLiteJournal

            progress = LocalProgress()
            journal = SQLiteJournal(state_folder(settings) / "journal.sqlite3")
            from bot.worker.worker import Worker  # the model layer loads only in embedded mode

            worker = Worker.from_settings(settings, progress.publish)
            task = register(broker, worker.run)
        await broker.startup()
        scheduler = Scheduler(
            task,
            progress,
            queue_max=settings.queue_max,
            user_running=settings.user_max_running,
            user_waiting=settings.user_max_waiting,
            timeout=settings.job_timeout_seconds,
            journal=journal,
        )
        runtime = cls(broker, progress, scheduler, worker)
        if worker is not None:
            # The model and the soundfont load before the bot logs in: a broken set-up stops here, in
            # one line, instead of leaving a bot online with no worker behind it.
            try:
                await worker.start()
            except BaseException:
                await runtime.close()
                raise
        return runtime

    async def status(self) -> tuple[int, int]:
        """Jobs waiting or running, and workers online."""
        sched = self.scheduler
        if self.worker is not None:
            return len(sched.waiting) + len(sched.running), int(self.worker.ready.is_set())
        from bot.queue.redis_state import queue_depth, workers_online

        redis = self.progress.redis
        try:
            return await queue_depth(redis), len(await workers_online(redis))
        except Exception:  # Redis away: say what the bot itself knows
            return len(sched.waiting) + len(sched.running), 0

    async def status_depth(self) -> int:
        return (await self.status())[0]

    async def healthy(self) -> bool:
        if self.worker is not None:
            return self.worker.ready.is_set()
        try:
            return bool(await self.progress.redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        if self.worker:
            await self.worker.close()
        await self.progress.close()
        await self.scheduler.journal.close()
        await self.broker.shutdown()


def state_folder(settings: Settings) -> Path:
    """`STATE_DIR`, or ~/.cache/etude: the bot's small durable state (journal, seeds)."""
    return Path(settings.state_dir) if settings.state_dir else Path.home() / ".cache" / "etude"


async def _remote_only(spec: dict) -> dict:  # pragma: no cover - in Redis mode only workers run the task
    raise RuntimeError("compose jobs run in `etude worker` processes when REDIS_URL is set")


class EtudeBot(commands.Bot):
    """The bot: slash commands in cogs, buttons that survive restarts, jobs through `Runtime`."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None, **options):
        intents = discord.Intents.default()
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options
        )
        self.settings = settings
        self.runtime = runtime
        self._own_runtime = runtime is None
        self.metrics = Metrics("bot")
        self.health = None
        self.waiting_for: str | None = None  # what start-up waits for, for /healthz ("redis")
        self.set_up = False  # the queue is up and the commands synced: from here SIGTERM stops gracefully

    async def setup_hook(self) -> None:
        from bot.chat.answers import answer_error
        from bot.chat.buttons import EtudeButton
        from bot.chat.commands import ComposeCog

        if self.settings.health_port:  # first, so that /healthz can say what start-up waits for
            self.health = await serve(
                self.settings.health_port, self.metrics, self._healthy, self._health_detail
            )
        if self.runtime is None:
            self.waiting_for = "redis" if self.settings.redis_url else None
            self.runtime = await Runtime.start(self.settings)
            self.waiting_for = None
        self.metrics.gauge("queue_depth", "Jobs waiting or running.", self.runtime.status_depth)
        self.tree.on_error = answer_error  # one handler for every command's errors
        await self.add_cog(ComposeCog(self))
        self.add_dynamic_items(EtudeButton)  # every `etude:` button, of every command
        from bot.chat import harmonize

        await harmonize.setup(self)
        if self.settings.discord_guild_id:
            guild = discord.Object(self.settings.discord_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        self.set_up = True
        log.info("commands synced")

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (%s) in %d servers", self.user, getattr(self.user, "id", "?"), len(self.guilds)
        )

    async def _healthy(self) -> bool:
        return not self.is_closed() and self.runtime is not None and await self.runtime.healthy()

    async def _health_detail(self) -> dict:
        return {"waiting_for": self.waiting_for} if self.waiting_for else {}

    async def stop_gracefully(self) -> None:
        """SIGTERM: take no more work, tell waiting users, let running jobs finish within the deadline, close.

        In the embedded mode what is not done by then stays in the journal and is run after the restart; in
        Redis mode the workers go on and the next bot answers.
        """
        log.info("stopping: no new jobs; finishing within %.0f s", self.settings.stop_deadline_seconds)
        cog = self.get_cog("ComposeCog")
        if cog is not None and self.runtime is not None:
            await cog.desk.announce_restart()
            sched, embedded = self.runtime.scheduler, self.runtime.worker is not None
            deadline = asyncio.get_running_loop().time() + self.settings.stop_deadline_seconds
            # Pieces on their way to their users go out first; an embedded worker's running jobs too.
            while (sched.answering or (embedded and sched.running)) and (
                asyncio.get_running_loop().time() < deadline
            ):
                await asyncio.sleep(0.2)
        await self.close()

    async def close(self) -> None:
        cog = self.get_cog("ComposeCog")
        if cog is not None:
            await cog.desk.stop_waiting()
        await super().close()
        if self.health is not None:
            await self.health.cleanup()
        if self.runtime is not None and self._own_runtime:
            await self.runtime.close()


async def run_bot(settings: Settings) -> None:
    """Log in and serve until stopped; a missing or rejected token, or a Discord that cannot be reached,
    is a one-line error. SIGTERM before the bot is online (waiting for Redis, loading the model, logging in)
    stops it at once; once online it stops gracefully (`EtudeBot.stop_gracefully`)."""
    from bot.chat.endpoints import apply_endpoints

    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        raise BadOption("DISCORD_TOKEN is not set: put the bot's token in the environment or .env")
    try:
        apply_endpoints(settings.discord_api_base, settings.discord_gateway_url)
    except ValueError as e:
        raise BadOption(f"DISCORD_API_BASE or DISCORD_GATEWAY_URL: {e}") from None
    bot = EtudeBot(settings)
    loop = asyncio.get_running_loop()
    starting = asyncio.Event()  # set by SIGTERM before the bot is online
    stopping: list[asyncio.Task] = []

    def on_term() -> None:
        if not bot.set_up:
            starting.set()
        elif not stopping:
            stopping.append(asyncio.create_task(bot.stop_gracefully()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_term)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        async with bot:
            await unless_stopped(bot.start(settings.discord_token.get_secret_value()), starting)
    except Stopped:
        log.info("stopped before the bot was online")
    except discord.LoginFailure:
        raise BadOption("Discord rejected the token in DISCORD_TOKEN") from None
    except (aiohttp.ClientConnectionError, discord.GatewayNotFound) as e:
        raise BadOption(f"cannot reach Discord at {Route.BASE}: {e}"[:300]) from None
    finally:
        if stopping:
            await asyncio.gather(*stopping, return_exceptions=True)
