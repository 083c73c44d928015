"""`etude bot` and `etude worker`: the long-running services, the Discord bot and a Redis queue worker."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.queue.interfaces import MakeWorker


def cmd_bot(args) -> int:
    import asyncio

    from bot.chat.client import run_bot
    from bot.settings import get_settings

    settings = get_settings()
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("discord").setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        asyncio.run(run_bot(settings, embedded_worker(settings)))
    except KeyboardInterrupt:
        pass
    return 0


def embedded_worker(settings) -> MakeWorker | None:
    """Without `REDIS_URL` the bot runs its jobs in a worker of its own; only then is the model imported."""
    if settings.redis_url:
        return None
    from bot.worker.worker import Worker

    return Worker.from_settings


def cmd_worker(args) -> int:
    import asyncio

    from bot.settings import get_settings
    from bot.worker.worker import serve_worker

    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(serve_worker(get_settings()))
    return 0


def add_bot(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("bot", help="run the Discord bot (needs DISCORD_TOKEN)")
    d.set_defaults(func=cmd_bot)


def add_worker(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("worker", help="sample jobs from the Redis queue (REDIS_URL); one per GPU")
    w.set_defaults(func=cmd_worker)
