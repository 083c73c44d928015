"""`etude bot` and `etude worker`: the long-running services, the Discord bot and a Redis queue worker."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.queue.interfaces import LocalWorker, Publish
    from bot.settings import Settings


def cmd_bot(args) -> int:
    import asyncio

    from bot.chat.client import run_bot
    from bot.settings import get_settings

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("discord").setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        asyncio.run(run_bot(get_settings(), embedded_worker))
    except KeyboardInterrupt:
        pass
    return 0


def embedded_worker(settings: Settings, publish: Publish) -> LocalWorker:
    """The bot's own worker, which the queue's runtime asks for only when `REDIS_URL` is unset: the model
    is imported then, as the queue starts (after /healthz is up), and never in Redis mode."""
    from bot.model import backend
    from bot.worker.worker import Worker

    backend.serving()
    return Worker.from_settings(settings, publish)


def cmd_worker(args) -> int:
    import asyncio

    from bot.model import backend
    from bot.settings import get_settings
    from bot.worker.worker import serve_worker

    backend.serving()
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(serve_worker(get_settings()))
    return 0


def add_bot(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("bot", help="run the Discord bot (needs DISCORD_TOKEN)")
    d.set_defaults(func=cmd_bot)


def add_worker(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("worker", help="sample jobs from the Redis queue (REDIS_URL); one per GPU")
    w.set_defaults(func=cmd_worker)
