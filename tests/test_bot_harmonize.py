"""`/harmonize` end to end: the real discord.py client and embedded worker against the fake Discord."""

from __future__ import annotations

import asyncio

import pytest
from processes import settled
from test_bot import EPHEMERAL, embed_of, fake, file_sizes, running, runtime  # noqa: F401 (fixtures)
from test_harmonize import TUNE, tune_bytes
from test_midi import note, smf

from bot.music.events import Event
from bot.music.melody import read_melody
from bot.music.midi_out import midi_bytes

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio(loop_scope="module")]


def midi_of(entry: dict, fake) -> bytes:  # noqa: F811
    """The .mid the bot posted with a message, as a user would download it."""
    message = fake.message(entry["message_id"])
    return fake.file_data(next(a for a in message["attachments"] if a["filename"].endswith(".mid")))


async def test_harmonize_is_registered_with_a_required_melody(fake, running):  # noqa: F811
    command = fake.registered_command("harmonize")
    options = {o["name"]: o for o in command["options"]}
    assert command["description"].startswith("Harmonize a melody")
    assert options["melody"]["type"] == 11 and options["melody"]["required"]
    assert {"temperature", "tempo", "instrument", "rng_seed"} <= set(options)
    assert all(o.get("description") for o in command["options"])


async def test_harmonize_replies_with_a_chorale_on_the_melody(fake, running):  # noqa: F811
    melody = fake.add_attachment("tune.mid", tune_bytes())
    inter = await fake.send_command("harmonize", {"rng_seed": 12}, attachment=melody, user=fake.user(7))
    reply = await inter.wait_for_followup(timeout=120)
    assert inter.callback["body"]["type"] == 5 and inter.callback["time"] - inter.created < 3.0
    assert file_sizes(reply).keys() == {"mid", "ogg", "wav", "png"}
    embed = embed_of(reply)
    assert "Harmonized for" in embed["description"] and "tune" in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Length"].startswith("15 notes") and fields["RNG seed"] == "`12`"
    top = read_melody(midi_of(reply, fake))
    assert [(n.onset, n.duration, n.pitches[0]) for n in top.notes] == TUNE
    (button,) = [c["custom_id"] for row in reply["body"]["components"] for c in row["components"]]
    assert button.startswith("etude:harmonize:")

    # Re-roll, also after the bot restarts: the same melody, a new RNG seed.
    await settled(running.runtime.scheduler)  # the chorale's answer is out before the bot restarts
    await running.restart()
    again = await fake.click(fake.message(reply["message_id"]), button)
    second = await again.wait_for_followup(timeout=120)
    assert "Harmonized for" in embed_of(second)["description"]
    assert {f["name"]: f["value"] for f in embed_of(second)["fields"]}["RNG seed"] != "`12`"
    top = read_melody(midi_of(second, fake))
    assert [n.pitches[0] for n in top.notes] == [p for _, _, p in TUNE]


@pytest.mark.parametrize(
    "name,data,words",
    [
        ("fake.mid", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), "The melody is not a MIDI file"),
        ("long.mid", midi_bytes([Event(i / 2, 0.5, (60 + i % 7,)) for i in range(450)]), "at most 400"),
        (
            "drums.mid",
            smf([b"".join(note(36 + i % 10, 48, channel=9) for i in range(50))]),
            "only drum notes",
        ),
    ],
)
async def test_bad_melodies_get_a_private_message_and_the_bot_serves_on(fake, running, name, data, words):  # noqa: F811
    inter = await fake.send_command("harmonize", {}, attachment=fake.add_attachment(name, data))
    msg = await inter.wait_for(lambda e: e["kind"] == "followup" and e["status"] < 300, timeout=60)
    assert words in msg["body"]["content"] and "\n" not in msg["body"]["content"]
    assert int(msg["body"]["flags"]) & EPHEMERAL and not msg.get("files")
    ok = await fake.send_command(
        "harmonize", {"rng_seed": 1}, attachment=fake.add_attachment("t.mid", tune_bytes())
    )
    assert file_sizes(await ok.wait_for_followup(timeout=120)).keys() == {"mid", "ogg", "wav", "png"}
    await asyncio.sleep(0)


async def test_a_melody_wider_than_a_soprano_is_folded_and_the_reply_names_the_bars(fake, running):  # noqa: F811
    from test_melody import wide_tune

    melody = fake.add_attachment("theme.mid", midi_bytes(wide_tune()))
    reply = await fake.send_command("harmonize", {"rng_seed": 3}, attachment=melody)
    embed = embed_of(await reply.wait_for_followup(timeout=120))
    assert "17 notes moved by an octave to fit a soprano's range: bars 1-2, 5-6." in embed["description"]


async def test_a_melody_of_the_wrong_type_is_refused_before_download(fake, running):  # noqa: F811
    melody = fake.add_attachment("tune.mp3", b"ID3" + bytes(100), content_type="audio/mpeg")
    inter = await fake.send_command("harmonize", {}, attachment=melody)
    answer = await inter.wait_for_callback(timeout=10)
    assert answer["body"]["type"] == 4 and answer["body"]["data"]["flags"] & EPHEMERAL
    assert "MIDI" in answer["body"]["data"]["content"] and not fake.downloads
