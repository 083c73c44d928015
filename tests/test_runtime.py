"""The bot's queue runtime: the embedded worker is handed in by the top layer, never imported by the bot."""

from __future__ import annotations

import pytest

from bot.errors import BadOption
from bot.queue.interfaces import LocalWorker
from bot.queue.runtime import Runtime
from bot.settings import Settings


async def test_without_redis_and_without_a_worker_the_runtime_says_so(tmp_path):
    settings = Settings(_env_file=None, redis_url=None, state_dir=str(tmp_path))
    with pytest.raises(BadOption, match="REDIS_URL is not set and this process runs no worker"):
        await Runtime.start(settings)
    assert not list(tmp_path.iterdir())  # refused before any state was made


def test_the_worker_is_what_the_runtime_asks_for(tmp_path):
    from bot.cli.serve import embedded_worker
    from bot.worker.worker import Worker

    settings = Settings(_env_file=None, redis_url=None, model_dir=str(tmp_path), batch_size=3)
    worker = embedded_worker(settings, None)
    assert isinstance(worker, Worker) and isinstance(worker, LocalWorker)
    assert worker.batch_size == 3 and worker.model_dir == str(tmp_path)
    assert worker.card == {} and not worker.ready.is_set()  # nothing loads before `start`
