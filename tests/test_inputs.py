# ruff: noqa: F811  (pytest fixtures imported from test_bot are parameters here)
"""Every input answered, no finished piece dropped: options at their edges, forged buttons, a reply whose
extras fail, values Discord's client would never send. The real discord.py client and embedded worker
against the fake Discord."""

from __future__ import annotations

import asyncio
import logging

import pytest
from test_bot import EPHEMERAL, fake, file_sizes, running, runtime  # noqa: F401 (fixtures)

from bot.chat import buttons

pytestmark = [pytest.mark.timeout(300), pytest.mark.asyncio(loop_scope="module")]


def ids_of(entry: dict) -> list[str]:
    return [c["custom_id"] for row in entry["body"].get("components") or [] for c in row["components"]]


async def private_line(inter, timeout: float = 30) -> str:
    """The one private line a refused interaction gets, as a callback or a follow-up."""
    answer = await inter.wait_for(
        lambda e: (
            e["kind"] in ("callback", "followup")
            and e["status"] < 300
            and (e["body"].get("type") in (4, None) or e["kind"] == "followup")
        ),
        timeout=timeout,
    )
    body = answer["body"]["data"] if answer["kind"] == "callback" else answer["body"]
    assert int(body["flags"]) & EPHEMERAL and "\n" not in body["content"]
    return body["content"]


async def test_a_tiny_top_p_gets_its_piece_and_working_buttons(fake, running):
    inter = await fake.send_command("compose", {"length": 20, "top_p": 1e-05, "rng_seed": 3})
    reply = await inter.wait_for_followup(timeout=120)
    assert file_sizes(reply).keys() == {"mid", "ogg", "wav", "png"}
    reroll, cont = ids_of(reply)
    assert ":p0.0001" in reroll and buttons.parse(reroll).options.top_p == 0.0001
    again = await fake.click(fake.message(reply["message_id"]), reroll)
    assert file_sizes(await again.wait_for_followup(timeout=120)).keys() == {"mid", "ogg", "wav", "png"}


FORGED = [
    "etude:reroll:-5:1:0.95:0:0:-",
    "etude:reroll:500:1:1e-05:0:0:-",
    "etude:reroll:500:1:0.95:0:0:-:k123",
    "etude:reroll:500:1:0.95:0:0:0123456789ABCDEF",
    "etude:reroll:500:1:0.95:0:0:-:k24",
    "etude:bogus:1:2:3",
    "etude:",
    "etude:reroll:500:1:0.95:0:0:-:junk",
    "etude:harmonize:1:0:999:0123456789abcdef",
    "etude:harmonize:9:0:0:0123456789abcdef",
    "etude:harmonize:1:5:0:0123456789abcdef",
]


async def test_forged_and_stale_buttons_are_answered_privately(fake, running, caplog):
    inter = await fake.send_command("compose", {"length": 12, "rng_seed": 4})
    reply = await inter.wait_for_followup(timeout=120)
    message = fake.message(reply["message_id"])
    button = message["components"][0]["components"][0]
    for cid in FORGED:
        button["custom_id"] = cid  # what a hostile client or a message from an older bot would carry
        click = await fake.click(message, cid)
        line = await private_line(click)
        assert line.startswith("This button no longer works"), (cid, line)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # A valid id whose stored seed is gone says so.
    button["custom_id"] = "etude:reroll:l12:sfedcba9876543210"
    click = await fake.click(message, button["custom_id"])
    assert "no longer kept" in await private_line(click)


async def test_values_discord_would_not_send_are_bad_input_not_faults(fake, running, caplog):
    for options in ({"instrument": 200}, {"key": "H major"}):
        inter = await fake.send_command("compose", {"length": 10, **options}, forged=True)
        line = await private_line(inter)
        assert "is not one of this option's choices" in line and "ref" not in line
    inter = await fake.send_command("compose", {"length": 5000}, forged=True)
    assert "Length must be between 1 and 2000" in await private_line(inter)
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_piece_whose_buttons_fail_is_delivered_without_them(
    fake, running, runtime, monkeypatch, caplog
):
    import bot.chat.desk

    def broken(*args, **kwargs):
        raise RuntimeError("buttons on fire")

    monkeypatch.setattr(bot.chat.desk, "piece_view", broken)
    inter = await fake.send_command("compose", {"length": 12, "rng_seed": 5})
    reply = await inter.wait_for_followup(timeout=120)
    assert file_sizes(reply).keys() == {"mid", "ogg", "wav", "png"} and not ids_of(reply)
    record = next(r for r in caplog.records if "no buttons under the piece" in r.getMessage())
    assert record.exc_info and "buttons on fire" in str(record.exc_info[1])
    assert "(ref " in record.getMessage()
    # The job leaves the journal once answered (the mark is written after the follow-up went out).
    for _ in range(300):
        pending = await runtime.scheduler.journal.pending()
        if not any(spec.interaction_token == inter.token for spec, _ in pending):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the delivered job stayed in the journal")


async def test_reroll_keeps_video_and_a_fractional_tempo(fake, running):
    inter = await fake.send_command("compose", {"length": 8, "rng_seed": 6, "tempo": 20.5, "video": True})
    reply = await inter.wait_for_followup(timeout=180)
    assert "mp4" in file_sizes(reply)
    reroll = ids_of(reply)[0]
    press = buttons.parse(reroll)
    assert (press.options.tempo, press.options.video) == (20.5, True)
    again = await fake.click(fake.message(reply["message_id"]), reroll)
    second = await again.wait_for_followup(timeout=180)
    assert "mp4" in file_sizes(second)


async def test_continue_says_when_the_midi_is_too_large(fake, running):
    inter = await fake.send_command("compose", {"length": 10, "rng_seed": 7})
    reply = await inter.wait_for_followup(timeout=120)
    message = fake.message(reply["message_id"])
    midi = next(a for a in message["attachments"] if a["filename"].endswith(".mid"))
    midi["size"] = 3 * 2**20  # as Discord would declare a larger file
    click = await fake.click(message, ids_of(reply)[1])
    line = await private_line(click)
    assert "MIDI file is larger than" in line and "has no MIDI file" not in line
