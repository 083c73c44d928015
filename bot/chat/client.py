"""`etude bot`: the discord.py client, its job runtime (embedded worker or Redis), and start-up."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.errors import BadOption
from bot.health import Metrics, serve
from bot.queue.broker import make_broker, register
from bot.queue.scheduler import LocalProgress, Scheduler
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.queue.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The queue as the bot sees it: a broker, a progress channel, a scheduler, and maybe a worker."""

    broker: object
    progress: object
    scheduler: Scheduler
    worker: Worker | None = None  # the embedded worker; None when `etude worker`s serve a Redis queue
    worker_task: asyncio.Task | None = None

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        broker = make_broker(settings.redis_url, settings.reclaim_seconds, settings.batch_size or 16)
        worker = None
        journal = None
        if settings.redis_url:
            from bot.queue.redis_broker import RedisJournal, RedisProgress

            progress = RedisProgress(settings.redis_url)
            journal = RedisJournal(settings.redis_url)
            task = register(broker, _remote_only)
        else:
            progress = LocalProgress()
            from bot.queue.worker import Worker  # the model layer loads only in embedded mode

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
        if worker is not None:  # the model loads in the background; jobs wait for it
            runtime.worker_task = asyncio.create_task(worker.start(), name="etude-worker-start")
        return runtime

    async def status(self) -> tuple[int, int]:
        """Jobs waiting or running, and workers online."""
        sched = self.scheduler
        if self.worker is not None:
            return len(sched.waiting) + len(sched.running), int(self.worker.ready.is_set())
        from bot.queue.redis_broker import queue_depth, workers_online

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
        if self.worker_task:
            self.worker_task.cancel()
            await asyncio.gather(self.worker_task, return_exceptions=True)
        if self.worker:
            await self.worker.close()
        await self.progress.close()
        if hasattr(self.scheduler.journal, "close"):
            await self.scheduler.journal.close()
        await self.broker.shutdown()


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

    async def setup_hook(self) -> None:
        from bot.chat.commands import ComposeCog, PieceButton

        if self.runtime is None:
            self.runtime = await Runtime.start(self.settings)
        self.metrics.gauges["queue_depth"] = lambda: self.runtime.status_depth()
        if self.runtime.worker is not None:  # the embedded worker's batches are the bot's
            self.metrics.batches = self.runtime.worker.metrics.batches
            self.metrics.gauges["notes_sampled"] = lambda: self.runtime.worker.metrics.notes
        if self.settings.health_port:
            self.health = await serve(self.settings.health_port, self.metrics, self._healthy)
        await self.add_cog(ComposeCog(self))
        self.add_dynamic_items(PieceButton)
        if self.settings.discord_guild_id:
            guild = discord.Object(self.settings.discord_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        log.info("commands synced")

    async def on_ready(self) -> None:
        log.info(
            "logged in as %s (%s) in %d servers", self.user, getattr(self.user, "id", "?"), len(self.guilds)
        )

    async def _healthy(self) -> bool:
        return not self.is_closed() and self.runtime is not None and await self.runtime.healthy()

    async def close(self) -> None:
        cog = self.get_cog("ComposeCog")
        if cog is not None:
            await cog.stop_waiting()
        await super().close()
        if self.health is not None:
            await self.health.cleanup()
        if self.runtime is not None and self._own_runtime:
            await self.runtime.close()


async def run_bot(settings: Settings) -> None:
    """Log in and serve until stopped; a missing or rejected token is a one-line error."""
    from bot.chat.endpoints import apply_endpoints

    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        raise BadOption("DISCORD_TOKEN is not set: put the bot's token in the environment or .env")
    apply_endpoints(settings.discord_api_base, settings.discord_gateway_url)
    bot = EtudeBot(settings)
    try:
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        raise BadOption("Discord rejected the token in DISCORD_TOKEN") from None
