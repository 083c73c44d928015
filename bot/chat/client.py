"""`etude bot`: the discord.py client and its start-up; the queue behind it is `bot.queue.runtime`'s."""

from __future__ import annotations

import asyncio
import logging
import signal

import aiohttp
import discord
from discord.ext import commands
from discord.http import Route

from bot.aio import Stopped, unless_stopped
from bot.errors import BadOption
from bot.health import Metrics, serve
from bot.queue.interfaces import MakeWorker
from bot.queue.runtime import Runtime
from bot.settings import Settings

log = logging.getLogger(__name__)


class EtudeBot(commands.Bot):
    """The bot: slash commands in cogs, buttons that survive restarts, jobs through `Runtime`."""

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime | None = None,
        make_worker: MakeWorker | None = None,
        **options,
    ):
        """`runtime`: a queue already started (kept open on close); else one is started with `make_worker`,
        which builds the embedded worker when `REDIS_URL` is unset."""
        intents = discord.Intents.default()
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options
        )
        self.settings = settings
        self.runtime = runtime
        self._own_runtime = runtime is None
        self.make_worker = make_worker
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
            self.runtime = await Runtime.start(self.settings, self.make_worker)
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


async def run_bot(settings: Settings, make_worker: MakeWorker | None = None) -> None:
    """Log in and serve until stopped; a missing or rejected token, or a Discord that cannot be reached,
    is a one-line error. SIGTERM before the bot is online (waiting for Redis, loading the model, logging in)
    stops it at once; once online it stops gracefully (`EtudeBot.stop_gracefully`). Without `REDIS_URL` the
    jobs run in `make_worker`'s worker, in this process."""
    from bot.chat.endpoints import apply_endpoints

    if settings.discord_token is None or not settings.discord_token.get_secret_value().strip():
        raise BadOption("DISCORD_TOKEN is not set: put the bot's token in the environment or .env")
    try:
        apply_endpoints(settings.discord_api_base, settings.discord_gateway_url)
    except ValueError as e:
        raise BadOption(f"DISCORD_API_BASE or DISCORD_GATEWAY_URL: {e}") from None
    bot = EtudeBot(settings, make_worker=make_worker)
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
