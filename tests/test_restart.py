"""The embedded bot as a real process (`python -m bot bot`) against the fake Discord: SIGTERM with jobs
queued tells the users, exits 0 within the deadline, and the restarted bot answers every job once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
import pytest_asyncio
from fakediscord import FakeDiscord

from bot.queue.journal import SQLiteJournal

pytestmark = [pytest.mark.timeout(900), pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module")
async def fake():
    async with FakeDiscord() as f:
        yield f


async def start_bot(fake: FakeDiscord, env: dict, log) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "bot", env={**os.environ, **env}, stdout=log, stderr=log
    )
    for _ in range(6000):  # the embedded bot imports TensorFlow first: minutes on a busy machine
        try:
            fake.registered_command("compose")
            return proc
        except Exception:  # not synced yet
            assert proc.returncode is None, "the bot exited while starting"
            await asyncio.sleep(0.1)
    raise AssertionError("the bot did not sync its commands")


async def test_sigterm_with_jobs_queued_then_restart_answers_everyone(fake, tiny_model_dir, tmp_path):
    env = {
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE": fake.api_base,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "MODEL_DIR": str(tiny_model_dir),
        "STATE_DIR": str(tmp_path / "state"),
        "STOP_DEADLINE_SECONDS": "3",
        "BATCH_SIZE": "1",
        "REDIS_URL": "",
    }
    log = open(tmp_path / "bot.log", "wb")
    proc = await start_bot(fake, env, log)
    inters = [
        await fake.send_command("compose", {"length": 150, "rng_seed": i}, user=fake.user(40 + i))
        for i in range(6)
    ]
    for inter in inters:
        assert (await inter.wait_for_callback(timeout=60))["body"]["type"] == 5  # a busy machine is slow
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0, (tmp_path / "bot.log").read_text()
    done_before = [i for i in inters if i.followups]
    waiting = [i for i in inters if not i.followups]
    if not waiting:
        log.close()
        pytest.skip("every job finished before SIGTERM on this machine, so no restart had anything to answer")
    for inter in waiting:  # told that their piece comes after the restart
        assert any(
            "restarting" in (e["body"].get("content") or "") for e in inter.events if e["kind"] == "edit"
        )
    journal = SQLiteJournal(tmp_path / "state" / "journal.sqlite3")
    assert len(await journal.pending()) == len(waiting)

    proc = await start_bot(fake, env, log)
    try:
        for inter in waiting:
            reply = await inter.wait_for_followup(timeout=240)
            assert {f["filename"].rsplit(".", 1)[1] for f in reply["files"]} == {"mid", "ogg", "wav", "png"}
        while await journal.pending():  # settled: every job answered and struck from the journal
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        log.close()
    # The bot has exited: whatever it sent is in the fake's log, late duplicates included.
    assert all(len(i.followups) == 1 for i in inters)  # nobody twice, nobody forgotten
    assert not any(e["kind"] == "channel_message" for e in fake.log)
    assert len(done_before) + len(waiting) == 6
