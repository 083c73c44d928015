"""Delivery on its own: retries across 5xx and 429 while the token lives, the channel after, bounded texts.

Discord's side is a scripted webhook and channel (the edge of the machine); time is a fake clock that the
back-off advances, so a 90-second outage takes no real time.
"""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import discord
import pytest

from bot.chat.delivery import EMBED_DESCRIPTION_MAX, FILENAME_MAX, Delivery, bound_filename
from bot.options import Options
from bot.queue.jobs import JobResult, JobSpec, ResultFile

pytestmark = pytest.mark.timeout(30)
NOW = 1_000_000.0


def http_error(status: int, code: int = 0) -> discord.HTTPException:
    response = SimpleNamespace(status=status, reason="scripted")
    cls = discord.NotFound if status == 404 else discord.HTTPException
    return cls(response, {"code": code, "message": "scripted"})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


class Endpoint:
    """A webhook or a channel that fails while `fail(now)` returns an error, then takes the message."""

    def __init__(self, clock: Clock, fail=lambda now: None):
        self.clock, self.fail = clock, fail
        self.sent: list[dict] = []
        self.tries = 0
        self.edits: list[str] = []

    async def send(self, content=None, **kw) -> None:
        self.tries += 1
        error = self.fail(self.clock())
        if error is not None:
            raise error
        files = [(f.filename, f.fp.read()) for f in kw.get("files", [])]
        self.sent.append({"content": content, **kw, "files": files})

    async def edit_message(self, which: str, content: str) -> None:
        self.edits.append(content)

    async def delete_message(self, which: str) -> None:
        return None


class Client:
    def __init__(self, channel: Endpoint):
        self.channel = channel

    def get_channel(self, channel_id: int) -> Endpoint:
        return self.channel


def job(**kw) -> JobSpec:
    return JobSpec(
        options=asdict(Options(length=20)),
        user_id=42,
        channel_id=7,
        application_id=1,
        interaction_token="t",
        interaction_created=NOW,
        **kw,
    )


def piece(name: str = "Etude in C") -> JobResult:
    files = [
        ResultFile(f"{name}.mid", b"MThd", "audio/midi"),
        ResultFile(f"{name}.wav", b"RIFF", "audio/wav"),
    ]
    return JobResult("j", True, files=files, info={"name": name, "length": 20, "seed_name": name})


def delivery(clock: Clock, channel: Endpoint) -> Delivery:
    return Delivery(Client(channel), keep_seconds=600, clock=clock, sleep=clock.sleep)


async def test_server_errors_for_90_seconds_are_waited_out():
    clock = Clock()
    hook = Endpoint(clock, lambda now: http_error(500) if now < NOW + 90 else None)
    channel = Endpoint(clock)
    d = delivery(clock, channel)
    where = await d.deliver(job(), piece(), webhook=hook)
    assert where == "followup" and len(hook.sent) == 1 and not channel.sent
    assert hook.tries > 3 and clock.now >= NOW + 90
    assert not hook.edits  # the "done" edit comes after the piece is marked answered (`Desk.finish`)
    await d.done(job(), piece(), hook)
    assert hook.edits and hook.edits[-1].startswith("✅ Done")


async def test_rate_limits_are_retried_too():
    clock = Clock()
    hook = Endpoint(clock, lambda now: http_error(429) if now < NOW + 5 else None)
    assert await delivery(clock, Endpoint(clock)).deliver(job(), piece(), webhook=hook) == "followup"


async def test_after_the_token_the_channel_takes_the_piece_with_a_mention():
    clock = Clock()
    hook = Endpoint(clock, lambda now: http_error(503))
    channel = Endpoint(clock, lambda now: http_error(502) if now < NOW + 15 * 60 + 60 else None)
    where = await delivery(clock, channel).deliver(job(), piece(), webhook=hook)
    assert where == "channel" and len(channel.sent) == 1 and not hook.sent
    assert "<@42>" in channel.sent[0]["content"] and len(channel.sent[0]["files"]) == 2


async def test_an_expired_token_goes_to_the_channel_at_once():
    clock = Clock()
    hook = Endpoint(clock, lambda now: http_error(404, 10015))
    channel = Endpoint(clock)
    assert await delivery(clock, channel).deliver(job(), piece(), webhook=hook) == "channel"
    assert hook.tries == 1 and clock.now == NOW


async def test_a_failure_is_answered_privately_with_a_capital():
    clock = Clock()
    hook, channel = Endpoint(clock), Endpoint(clock)
    result = JobResult("j", False, error="the seed is not a MIDI file")
    assert await delivery(clock, channel).deliver(job(), result, webhook=hook) == "followup"
    assert hook.sent[0]["content"] == "The seed is not a MIDI file" and hook.sent[0]["ephemeral"]


async def test_user_texts_are_bounded_to_discords_limits():
    clock = Clock()
    hook = Endpoint(clock)
    name = "n" * 5000
    d = delivery(clock, Endpoint(clock))
    assert await d.deliver(job(), piece(name), webhook=hook) == "followup"
    await d.done(job(), piece(name), hook)
    sent = hook.sent[0]
    embed = sent["embed"]
    assert len(embed.title) <= 256 and len(embed.description) <= EMBED_DESCRIPTION_MAX and len(embed) <= 6000
    assert [n.rsplit(".", 1)[1] for n, _ in sent["files"]] == ["mid", "wav"]
    assert all(len(n) <= FILENAME_MAX for n, _ in sent["files"])
    assert len(hook.edits[-1]) <= 2000
    assert bound_filename("a.b" * 100).endswith(".b") and len(bound_filename("x" * 500)) == FILENAME_MAX


async def test_a_refused_message_is_not_retried_for_ever():
    clock = Clock()
    hook = Endpoint(clock, lambda now: http_error(400, 50035))
    channel = Endpoint(clock, lambda now: http_error(400, 50035))
    assert await delivery(clock, channel).deliver(job(), piece(), webhook=hook) == "nowhere"
    assert hook.tries == 1 and channel.tries == 1


async def test_without_webhook_or_channel_nothing_is_sent():
    clock = Clock()
    spec = job()
    spec.channel_id = None
    hook = Endpoint(clock, lambda now: http_error(404, 10015))
    assert await delivery(clock, Endpoint(clock)).deliver(spec, piece(), webhook=hook) == "nowhere"
