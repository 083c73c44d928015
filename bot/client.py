"""`etude bot`: the discord.py client, its job runtime (embedded worker or Redis), and start-up."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import discord
from discord.ext import commands

from .errors import BadOption
from .jobs import make_broker, register
from .scheduler import LocalProgress, Scheduler
from .settings import Settings
from .worker import Worker

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
        broker = make_broker(settings.redis_url)
        worker = None
        if settings.redis_url:
            from .redis_progress import RedisProgress

            progress = RedisProgress(settings.redis_url)
            task = register(broker, _remote_only)
        else:
            progress = LocalProgress()
            worker = Worker(
                settings.model_dir,
                batch_size=settings.batch_size,
                batch_wait_ms=settings.batch_wait_ms,
                seed_limits=settings.seed_limits(),
                soundfont=settings.soundfont,
                publish=progress.publish,
            )
            task = register(broker, worker.run)
        await broker.startup()
        scheduler = Scheduler(
            task,
            progress,
            queue_max=settings.queue_max,
            user_running=settings.user_max_running,
            user_waiting=settings.user_max_waiting,
            timeout=settings.job_timeout_seconds,
        )
        runtime = cls(broker, progress, scheduler, worker)
        if worker is not None:  # the model loads in the background; jobs wait for it
            runtime.worker_task = asyncio.create_task(worker.start(), name="etude-worker-start")
        return runtime

    async def close(self) -> None:
        if self.worker_task:
            self.worker_task.cancel()
            await asyncio.gather(self.worker_task, return_exceptions=True)
        if self.worker:
            await self.worker.close()
        await self.progress.close()
        await self.broker.shutdown()


async def _remote_only(spec: dict) -> dict:  # pragma: no cover - in Redis mode only workers run the task
    raise RuntimeError("compose jobs run in `etude worker` processes when REDIS_URL is set")


class EtudeBot(commands.Bot):
    """The bot: slash commands in cogs, buttons that survive restarts, jobs through `Runtime`."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None):
        intents = discord.Intents.default()
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None)
        self.settings = settings
        self.runtime = runtime
        self._own_runtime = runtime is None

    async def setup_hook(self) -> None:
        from .cogs.compose import ComposeCog, PieceButton

        if self.runtime is None:
            self.runtime = await Runtime.start(self.settings)
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

    async def close(self) -> None:
        await super().close()
        if self.runtime is not None and self._own_runtime:
            await self.runtime.close()


async def run_bot(settings: Settings) -> None:
    """Log in and serve until stopped; a missing or rejected token is a one-line error."""
    from .discord_endpoints import apply_endpoints

    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        raise BadOption("DISCORD_TOKEN is not set: put the bot's token in the environment or .env")
    apply_endpoints(settings.discord_api_base, settings.discord_gateway_url)
    bot = EtudeBot(settings)
    try:
        async with bot:
            await bot.start(settings.discord_token.get_secret_value())
    except discord.LoginFailure:
        raise BadOption("Discord rejected the token in DISCORD_TOKEN") from None
