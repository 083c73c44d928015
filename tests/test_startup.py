"""Start-up as an operator meets it: a broken model or soundfont, an unreachable Discord or Redis, and
SIGTERM while the process still waits (for Redis, for Discord, for the model). Real processes throughout."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import pytest
import pytest_asyncio
from fakediscord import FakeDiscord
from processes import free_port

pytestmark = [pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def fake():
    async with FakeDiscord() as f:
        yield f


def bot_env(fake: FakeDiscord, tmp_path: Path, **extra: str) -> dict:
    return {
        **os.environ,
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "STATE_DIR": str(tmp_path / "state"),
        "REDIS_URL": "",
        **extra,
    }


async def run(*args: str, env: dict, until: bytes | None = None, term: bool = False) -> tuple[int, str]:
    """`python -m bot ARGS`; with `until`, SIGTERM once stderr shows that text (or when `term`, at once).
    Returns the exit status and what the process wrote."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    err = b""
    if until is not None:
        while until not in err:
            line = await asyncio.wait_for(proc.stderr.readline(), 240)
            assert line, f"the process ended before {until!r}: {err.decode()}"
            err += line
        proc.send_signal(signal.SIGTERM)
    out, rest = await asyncio.wait_for(proc.communicate(), 240)
    return proc.returncode, (err + rest).decode()


def broken_models(tiny_model_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Model folders broken the ways an operator breaks them."""
    cases = {}
    for name in ("random", "empty", "no-weights", "bad-config"):
        folder = tmp_path / f"model-{name}"
        shutil.copytree(tiny_model_dir, folder)
        cases[name] = folder
    (cases["random"] / "model.keras").write_bytes(os.urandom(4096))
    (cases["empty"] / "model.keras").write_bytes(b"")
    with zipfile.ZipFile(cases["no-weights"] / "model.keras", "w") as z:
        z.writestr("metadata.json", "{}")
    (cases["bad-config"] / "config.json").write_text("{not json")
    return cases


def assert_one_error(code: int, err: str, words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and words in last, err


def settings_for(fake: FakeDiscord, tmp_path: Path, **kw):
    from bot.settings import Settings

    kw = {"discord_api_base": fake.api_base, **kw}
    return Settings(
        _env_file=None,
        discord_token=fake.token,
        discord_gateway_url=fake.gateway_url,
        state_dir=str(tmp_path / "state"),
        **kw,
    )


async def test_the_embedded_bot_stops_on_a_broken_model_or_soundfont(fake, tiny_model_dir, tmp_path):
    from bot.chat.client import run_bot
    from bot.chat.endpoints import apply_endpoints, current_endpoints
    from bot.cli.serve import embedded_worker
    from bot.errors import EtudeError

    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont" * 100)
    cases = {
        "cannot be loaded": {"model_dir": str(broken_models(tiny_model_dir, tmp_path)["random"])},
        "SoundFont": {"model_dir": str(tiny_model_dir), "soundfont": str(junk)},
        "cannot reach Discord": {
            "model_dir": str(tiny_model_dir),
            "discord_api_base": f"http://127.0.0.1:{free_port()}/api/v10",
        },
    }
    saved = current_endpoints()
    try:
        for words, kw in cases.items():
            with pytest.raises(EtudeError, match=words):
                await run_bot(settings_for(fake, tmp_path, **kw), embedded_worker)
    finally:
        apply_endpoints(*saved)


async def test_the_worker_stops_on_a_broken_model(redis_server, tiny_model_dir, tmp_path):
    from bot.errors import ModelNotFound
    from bot.settings import Settings
    from bot.worker.worker import serve_worker

    folder = broken_models(tiny_model_dir, tmp_path)["empty"]
    settings = Settings(_env_file=None, redis_url=redis_server.url, model_dir=str(folder))
    with pytest.raises(ModelNotFound, match="cannot be loaded"):
        await serve_worker(settings, asyncio.Event())


async def test_sigterm_while_waiting_for_redis(fake, tiny_model_dir, tmp_path):
    redis = f"redis://:pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = bot_env(fake, tmp_path, MODEL_DIR=str(tiny_model_dir), REDIS_URL=redis)
    for command in ("worker", "bot"):
        code, err = await run(command, env=env, until=b"Redis unreachable")
        assert code == 0, err
        assert "Traceback" not in err, err


async def test_sigterm_while_logging_in(fake, tiny_model_dir, tmp_path):
    """A Discord that takes the connection and never answers: the login waits, and SIGTERM ends it."""
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = bot_env(fake, tmp_path, MODEL_DIR=str(tiny_model_dir))
    env["DISCORD_API_BASE"] = f"http://127.0.0.1:{port}/api/v10"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "bot", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        await asyncio.wait_for(accepted.wait(), 240)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
    finally:
        server.close()
        for w in held:
            w.close()


async def test_sigterm_while_loading_the_model(fake, tiny_model_dir, tmp_path):
    """The embedded bot loads its model after logging in and before it connects: SIGTERM there stops it."""
    env = bot_env(fake, tmp_path, MODEL_DIR=str(tiny_model_dir))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "bot", env=env, stderr=asyncio.subprocess.PIPE
    )
    await fake.wait_for(lambda e: "/users/@me" in e.get("path", ""), timeout=240)  # logged in: loading now
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
