"""Shared fixtures: a private cache folder, a few real chorales from music21's corpus, a tiny trained model,
and Redis mode as real processes."""

from __future__ import annotations

import os

import pytest
import pytest_asyncio

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Parsed-score caches go to a folder of this run, never the user's."""
    old = os.environ.get("ETUDE_CACHE")
    os.environ["ETUDE_CACHE"] = str(tmp_path_factory.mktemp("etude-cache"))
    yield
    if old is None:
        os.environ.pop("ETUDE_CACHE", None)
    else:
        os.environ["ETUDE_CACHE"] = old


@pytest.fixture(scope="session")
def chorales():
    """Twelve Bach chorales from music21's corpus, parsed once per test run."""
    from bot.music.corpus import load_pieces

    return load_pieces("chorales", limit=12)


@pytest.fixture(scope="session")
def midi_folder(tmp_path_factory, chorales):
    """A folder of MIDI files, as a user would point `etude train --data` at."""
    from bot.music.midi_out import write_midi

    folder = tmp_path_factory.mktemp("midi_songs")
    for p in chorales:
        write_midi(p.events, folder / f"{p.name}.mid", tempo=p.tempo)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, midi_folder):
    """A small network trained for a few seconds: real weights, real folder, fast to sample."""
    from bot.model.train import train

    out = tmp_path_factory.mktemp("models") / "tiny-shared"
    train(
        str(midi_folder),
        out,
        preset="small",
        epochs=3,
        patience=10,
        verbose=0,
        overrides={"hidden": 48, "embed_dim": 16, "seq_len": 64, "batch_size": 8},
    )
    return out


@pytest.fixture(scope="session")
def composer(tiny_model_dir):
    from bot.model.composer import Composer

    return Composer(tiny_model_dir)


# Redis mode as real processes (tests/processes.py), for the tests that need Redis and workers.
@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own, with AOF persistence, fsync'd on each write."""
    from processes import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def workers(redis_server, tiny_model_dir, tmp_path):
    """`etude worker` processes on `redis_server` (none until a test starts them), killed after the test."""
    from processes import Workers

    pool = Workers(redis_server.url, tiny_model_dir, tmp_path)
    yield pool
    pool.stop_all()


@pytest_asyncio.fixture(loop_scope="module")
async def client(redis_server):
    """The bot's side of the queue, without Discord: stream, results, progress, journal, scheduler."""
    from processes import close, scheduler_for

    sched = await scheduler_for(redis_server.url)
    yield sched
    await close(sched)
