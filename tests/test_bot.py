"""End to end: the real discord.py client, the bot and its embedded worker, against the fake Discord."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import pytest_asyncio
from fakediscord import FakeDiscord
from processes import settled

from bot.chat.client import EtudeBot
from bot.chat.endpoints import apply_endpoints, current_endpoints
from bot.music.midi_out import midi_bytes
from bot.options import SPECS
from bot.queue.runtime import Runtime
from bot.settings import Settings
from bot.worker.worker import Worker

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio(loop_scope="module")]
EPHEMERAL = 64


def settings_for(fake: FakeDiscord | None, model_dir, state_dir, **kw) -> Settings:
    return Settings(
        _env_file=None,
        discord_token=fake.token if fake else "x",
        discord_api_base=fake.api_base if fake else None,
        discord_gateway_url=fake.gateway_url if fake else None,
        model_dir=str(model_dir),
        state_dir=str(state_dir),
        **kw,
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def runtime(tiny_model_dir, tmp_path_factory):
    """One embedded queue and worker for the module: a restarted bot gets it back, as a process would."""
    state = tmp_path_factory.mktemp("state")
    # Warm for the lengths these tests ask (12-40 notes share one compiled buffer size).
    rt = await Runtime.start(
        settings_for(None, tiny_model_dir, state, queue_max=50, batch_size=16, warm_length=30),
        Worker.from_settings,
    )
    await rt.worker.ready.wait()
    rt.state_dir = state
    yield rt
    await rt.close()


@pytest_asyncio.fixture(loop_scope="module")
async def fake():
    saved = current_endpoints()
    async with FakeDiscord() as f:
        yield f
    apply_endpoints(*saved)


class Running:
    """A started bot; `restart()` closes it and logs in a new one on the same queue."""

    def __init__(self, fake, runtime, tiny_model_dir):
        self.fake, self.runtime, self.model_dir = fake, runtime, tiny_model_dir
        self.bot = None
        self.task = None

    async def start(self) -> EtudeBot:
        apply_endpoints(self.fake.api_base, self.fake.gateway_url)
        s = settings_for(self.fake, self.model_dir, self.runtime.state_dir)
        self.bot = EtudeBot(s, runtime=self.runtime, guild_ready_timeout=0.05)
        self.task = asyncio.create_task(self.bot.start(self.fake.token))
        ready = asyncio.create_task(self.bot.wait_until_ready())
        done, _ = await asyncio.wait({self.task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            self.task.result()
        assert ready in done, self.fake.format_log()
        return self.bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
            await asyncio.wait_for(self.task, 10)

    async def restart(self) -> EtudeBot:
        await self.stop()
        return await self.start()


@pytest_asyncio.fixture(loop_scope="module")
async def running(fake, runtime, tiny_model_dir):
    r = Running(fake, runtime, tiny_model_dir)
    await r.start()
    yield r
    await r.stop()


def file_sizes(entry: dict) -> dict[str, int]:
    return {f["filename"].rsplit(".", 1)[1]: f["size"] for f in entry.get("files", [])}


def embed_of(entry: dict) -> dict:
    return (entry["body"].get("embeds") or [{}])[0]


async def test_login_and_command_sync(fake, running):
    compose = fake.registered_command("compose")
    options = {o["name"]: o for o in compose["options"]}
    assert compose["description"].startswith("Compose a piece of music")
    assert (options["length"]["type"], options["length"]["min_value"], options["length"]["max_value"]) == (
        4,
        1,
        2000,
    )
    assert options["seed"]["type"] == 11 and not options["seed"].get("required")
    assert (options["temperature"]["type"], options["temperature"]["min_value"]) == (
        10,
        SPECS["temperature"].lo,
    )
    assert options["top_p"]["type"] == 10 and options["top_p"]["max_value"] == 1
    assert {c["name"] for c in options["instrument"]["choices"]} >= {"piano", "organ", "strings"}
    assert options["tempo"]["min_value"] == 20 and options["rng_seed"]["type"] == 4
    assert all(o.get("description") for o in compose["options"])
    assert all(fake.registered_command(name) for name in ("compose", "help", "status"))
    assert not fake.unhandled


async def test_compose_defers_reports_progress_and_replies_with_files(fake, running):
    inter = await fake.send_command("compose", {"length": 40, "rng_seed": 11}, user=fake.user(1))
    reply = await inter.wait_for_followup(timeout=120)
    callback = inter.callback
    edits = [e for e in inter.events if e["kind"] == "edit" and e["status"] < 300]
    # Deferred first: every edit and the follow-up come after the deferral (how soon is `etude bench`'s).
    assert callback["body"]["type"] == 5
    assert all(inter.events.index(e) > inter.events.index(callback) for e in [*edits, reply])
    assert edits and "Queued" in (edits[0]["body"].get("content") or "")
    sizes = file_sizes(reply)
    assert set(sizes) == {"mid", "ogg", "wav", "png"}
    assert all(0 < s <= inter.attachment_size_limit for s in sizes.values())
    embed = embed_of(reply)
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["RNG seed"] == "`11`"
    # 40 notes and chords asked for; the closing cadence may add up to eight.
    count, unit = fields["Length"].split(" ", 1)
    assert 40 <= int(count) <= 48 and unit.startswith("notes and chords")
    assert fields["Key"].split()[1] in ("major", "minor") and "drawn by the RNG seed" in fields["Key"]
    assert {"Key", "Tempo", "Temperature", "Model"} <= set(fields)
    assert f"<@{fake.user(1)['user']['id']}>" in embed["description"]
    buttons = [c["custom_id"] for row in reply["body"]["components"] for c in row["components"]]
    assert buttons[0].startswith("etude:reroll:l40") and buttons[1].startswith("etude:continue:l40")
    await settled(running.runtime.scheduler)
    assert len(inter.followups) == 1


async def test_compose_with_a_seed(fake, running, chorales, capsys):
    seed = fake.add_attachment("chorale.mid", midi_bytes(chorales[0].events[:24], tempo=80))
    inter = await fake.send_command("compose", {"length": 30, "rng_seed": 5}, attachment=seed)
    reply = await inter.wait_for_followup(timeout=120)
    assert fake.downloads and "chorale" in embed_of(reply)["description"]
    assert "80 bpm" in json.dumps(embed_of(reply))
    with capsys.disabled():
        print("\n" + fake.format_log(inter))


async def test_small_upload_limit_forces_the_fallback(fake, running):
    limit = 120_000
    inter = await fake.send_command(
        "compose", {"length": 200, "rng_seed": 3, "tempo": 40}, attachment_size_limit=limit
    )
    reply = await inter.wait_for_followup(timeout=180)
    sizes = file_sizes(reply)
    assert "mid" in sizes and all(s <= limit for s in sizes.values())
    footer = embed_of(reply).get("footer", {}).get("text", "")
    assert "upload limit" in footer


async def test_bad_seed_gets_a_private_message(fake, running):
    seed = fake.add_attachment("song.mid", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    inter = await fake.send_command("compose", {"length": 30}, attachment=seed)
    msg = await inter.wait_for(lambda e: e["kind"] == "followup" and e["status"] < 300, timeout=30)
    assert msg["body"]["content"] == "The seed is not a MIDI file"
    assert int(msg["body"]["flags"]) & EPHEMERAL
    assert not msg.get("files")


async def test_wrong_seed_type_is_refused_before_download(fake, running):
    seed = fake.add_attachment("song.mp3", b"ID3" + bytes(100), content_type="audio/mpeg")
    inter = await fake.send_command("compose", {"length": 30}, attachment=seed)
    answer = await inter.wait_for_callback(timeout=10)
    assert answer["body"]["type"] == 4 and answer["body"]["data"]["flags"] & EPHEMERAL
    assert "MIDI" in answer["body"]["data"]["content"] and not fake.downloads


async def test_reroll_and_continue_buttons_also_after_a_restart(fake, running):
    inter = await fake.send_command("compose", {"length": 25, "rng_seed": 7})
    reply = await inter.wait_for_followup(timeout=120)
    message = fake.message(reply["message_id"])
    reroll, cont = [c["custom_id"] for row in message["components"] for c in row["components"]]

    again = await fake.click(message, reroll)
    second = await again.wait_for_followup(timeout=120)
    assert embed_of(second)["fields"][5]["value"] != "`7`"  # a new RNG seed
    assert file_sizes(second).keys() == {"mid", "ogg", "wav", "png"}

    await settled(running.runtime.scheduler)  # the re-roll's answer is out before the bot restarts
    await running.restart()
    more = await fake.click(message, cont)
    third = await more.wait_for_followup(timeout=120)
    assert "continuing" in embed_of(third)["description"]
    assert file_sizes(third).keys() == {"mid", "ogg", "wav", "png"}


async def test_expired_interaction_posts_in_the_channel(fake, running):
    inter = await fake.send_command("compose", {"length": 30, "rng_seed": 2}, user=fake.user(3))
    await inter.wait_for_callback(timeout=10)
    inter.expire()
    posted = await fake.wait_for(lambda e: e["kind"] == "channel_message" and e["status"] < 300, timeout=120)
    assert f"<@{fake.user(3)['user']['id']}>" in posted["body"]["content"]
    assert file_sizes(posted).keys() == {"mid", "ogg", "wav", "png"}


async def test_rate_limited_follow_up_is_retried(fake, running):
    fake.rate_limit_next("POST /api/v10/webhooks", retry_after=0.3)
    inter = await fake.send_command("compose", {"length": 20, "rng_seed": 4})
    reply = await inter.wait_for_followup(timeout=120)
    statuses = [e["status"] for e in inter.events if e["kind"] == "followup"]
    assert statuses[0] == 429 and reply["status"] < 300


async def test_help_and_status(fake, running):
    inter = await fake.send_command("help")
    answer = await inter.wait_for_callback(timeout=10)
    assert "/compose" in answer["body"]["data"]["embeds"][0]["description"]
    inter = await fake.send_command("status")
    answer = await inter.wait_for_callback(timeout=10)
    assert "Workers online:** 1" in answer["body"]["data"]["content"]


@pytest.mark.timeout(900)  # 50 pieces on a shared 2-core machine: a guard against a hang, not a latency bound
async def test_twenty_users_three_requests_each(fake, running):
    users = [fake.user(100 + i) for i in range(20)]
    inters = await asyncio.gather(
        *(
            fake.send_command("compose", {"length": 12, "rng_seed": i * 3 + k}, user=u)
            for i, u in enumerate(users)
            for k in range(3)
        )
    )
    callbacks = await asyncio.gather(*(i.wait_for_callback(timeout=10) for i in inters))
    accepted = [i for i, cb in zip(inters, callbacks) if cb["body"]["type"] == 5]
    refused = [cb for cb in callbacks if cb["body"]["type"] == 4]
    assert len(accepted) == 50 and len(refused) == 10  # queue_max 50
    for cb in refused:
        assert cb["body"]["data"]["flags"] & EPHEMERAL
        assert "busy" in cb["body"]["data"]["content"].lower()
    await asyncio.gather(*(i.wait_for_followup(timeout=800) for i in accepted))
    await settled(running.runtime.scheduler)
    assert all(len(i.followups) == 1 for i in accepted)
    assert all(file_sizes(i.followups[0]).keys() == {"mid", "ogg", "wav", "png"} for i in accepted)


async def test_a_rejected_token_is_a_clear_error(fake, tiny_model_dir, tmp_path, caplog):
    from bot.chat.client import run_bot
    from bot.cli.serve import embedded_worker
    from bot.errors import BadOption

    settings = settings_for(fake, tiny_model_dir, tmp_path)
    settings.discord_token = type(settings.discord_token)("not-the-token")
    with pytest.raises(BadOption, match="rejected the token"):
        await run_bot(settings, embedded_worker)
    assert "not-the-token" not in caplog.text


async def test_server_errors_are_retried(fake, running):
    fake.fail_next("POST /api/v10/webhooks", status=502)
    inter = await fake.send_command("compose", {"length": 20, "rng_seed": 8})
    reply = await inter.wait_for_followup(timeout=120)
    statuses = [e["status"] for e in inter.events if e["kind"] == "followup"]
    assert statuses[0] == 502 and reply["status"] < 300


async def test_unexpected_failure_is_logged_and_answered_with_a_reference(fake, running, monkeypatch, caplog):
    import bot.worker.worker

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bot.worker.worker, "render_for_limit", broken)
    inter = await fake.send_command("compose", {"length": 20, "rng_seed": 9})
    msg = await inter.wait_for(lambda e: e["kind"] == "followup" and e["status"] < 300, timeout=60)
    content = msg["body"]["content"]
    assert content.startswith("Something went wrong (ref ") and int(msg["body"]["flags"]) & EPHEMERAL
    ref = content.split("ref ")[1].rstrip(")")
    record = next(r for r in caplog.records if ref in r.getMessage())
    assert record.exc_info and "disk on fire" in str(record.exc_info[1])
    # The bot is still up: the next request is served.
    monkeypatch.undo()
    again = await fake.send_command("compose", {"length": 20, "rng_seed": 10})
    assert file_sizes(await again.wait_for_followup(timeout=120)).keys() == {"mid", "ogg", "wav", "png"}


async def test_a_seed_with_a_5000_character_name_still_gets_its_piece(fake, running, chorales):
    seed = fake.add_attachment("n" * 5000 + ".mid", midi_bytes(chorales[1].events[:12], tempo=90))
    inter = await fake.send_command("compose", {"length": 12, "rng_seed": 21}, attachment=seed)
    reply = await inter.wait_for_followup(timeout=120)
    assert file_sizes(reply).keys() == {"mid", "ogg", "wav", "png"}
    assert all(len(f["filename"]) <= 100 for f in reply["files"])
    assert len(embed_of(reply)["description"]) <= 4096


async def test_buttons_are_checked_against_todays_limits(fake, running):
    inter = await fake.send_command("compose", {"length": 40, "rng_seed": 23})
    reply = await inter.wait_for_followup(timeout=120)
    message = fake.message(reply["message_id"])
    reroll = message["components"][0]["components"][0]["custom_id"]
    settings = running.bot.settings
    saved = settings.max_length
    settings.max_length = 30  # the operator lowered MAX_LENGTH after the button was made
    try:
        click = await fake.click(message, reroll)
        answer = await click.wait_for_callback(timeout=10)
    finally:
        settings.max_length = saved
    data = answer["body"]["data"]
    assert answer["body"]["type"] == 4 and data["flags"] & EPHEMERAL
    assert data["content"] == "This button no longer works: length can be at most 30 notes here"
    # A button whose options do not validate at all (temperature 9) is answered the same way.
    message["components"][0]["components"][0]["custom_id"] = reroll.replace(":l40", ":l40:t9")
    click = await fake.click(message, message["components"][0]["components"][0]["custom_id"])
    answer = await click.wait_for_callback(timeout=10)
    assert "no longer works" in answer["body"]["data"]["content"]


async def test_a_restarted_bot_leaves_another_bots_jobs_alone(fake, running, runtime):
    from dataclasses import asdict

    from bot.options import Options
    from bot.queue.jobs import JobSpec

    foreign = JobSpec(
        options=asdict(Options(length=10)),
        user_id=77,
        channel_id=fake.channel_id,
        application_id=fake.application_id + 1,
        interaction_token="another-bots-token",
        interaction_created=time.time(),
    )
    await runtime.scheduler.journal.add(foreign)
    try:
        await running.restart()
        mine = await fake.send_command("compose", {"length": 10, "rng_seed": 31})
        await mine.wait_for_followup(timeout=120)  # recovery has run by now
        assert foreign.job_id in {s.job_id for s, _ in await runtime.scheduler.journal.pending()}
        assert not any(
            "<@77>" in json.dumps(e.get("body") or {}) for e in fake.log if e["kind"] == "channel_message"
        )
    finally:
        await runtime.scheduler.journal.remove(foreign.job_id)
