"""The fake Discord against the real discord.py client: login, gateway, command sync, interactions, uploads,
rate limits and failures, so that the bot's end-to-end tests can trust it."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands
from discord.utils import _ActiveDecompressionContext
from fakediscord import FakeDiscord

from bot.chat.endpoints import (
    DISCORD_API_BASE,
    DISCORD_GATEWAY_URL,
    apply_endpoints,
    current_endpoints,
)

pytestmark = pytest.mark.timeout(60)


class PingView(discord.ui.View):
    """One button that answers ephemerally and remembers who clicked it."""

    def __init__(self, clicks: list[int]) -> None:
        super().__init__(timeout=60)
        self.clicks = clicks

    @discord.ui.button(label="Again", custom_id="ping:again", style=discord.ButtonStyle.primary)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.clicks.append(interaction.user.id)
        await interaction.response.send_message("pong again", ephemeral=True)

    @discord.ui.button(label="Edit", custom_id="ping:edit")
    async def edit(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        # An UPDATE_MESSAGE callback with a file: multipart on the callback route, attachments replaced.
        data = io.BytesIO(b"edited" * 10)
        await interaction.response.edit_message(
            content="edited", attachments=[discord.File(data, "edit.txt")]
        )


class PingBot(commands.Bot):
    def __init__(self) -> None:
        # A short guild_ready_timeout: on_ready waits this long after the last GUILD_CREATE.
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            guild_ready_timeout=0.05,
        )
        self.clicks: list[int] = []
        self.limits: list[int] = []
        self.errors: list[BaseException] = []
        self.tree.add_command(self._ping_command())
        self.tree.on_error = self._on_tree_error

    async def setup_hook(self) -> None:
        await self.tree.sync()

    def _ping_command(self) -> app_commands.Command:
        @app_commands.command(name="ping")
        @app_commands.describe(count="How many pongs", echo="A file to measure")
        async def ping(
            interaction: discord.Interaction,
            count: app_commands.Range[int, 1, 5] = 1,
            echo: discord.Attachment | None = None,
        ) -> None:
            """Answer with a pong file and a button."""
            self.limits.append(interaction.filesize_limit)
            await interaction.response.defer(thinking=True)
            text = f"pong x{count}"
            if echo is not None:
                text += f", echo {len(await echo.read())} bytes"
            data = io.BytesIO(b"pong" * count * 100)
            await interaction.followup.send(
                text, file=discord.File(data, "pong.txt"), view=PingView(self.clicks)
            )

        return ping

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        self.errors.append(error)


@pytest.fixture(autouse=True)
def _restore_endpoints():
    """apply_endpoints is process-wide: put Discord's addresses back for the tests after this one."""
    saved = current_endpoints()
    yield
    apply_endpoints(*saved)


@pytest.fixture
async def fake():
    async with FakeDiscord() as f:
        yield f


@pytest.fixture
async def bot(fake: FakeDiscord):
    """A PingBot logged in to the fake, ready; closed afterwards whatever happened."""
    apply_endpoints(fake.api_base, fake.gateway_url)
    client = PingBot()
    runner = asyncio.create_task(client.start(fake.token))
    ready = asyncio.create_task(client.wait_until_ready())
    try:
        done, _ = await asyncio.wait({runner, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # raises why start() ended
        assert ready in done, f"bot not ready in 20 s\n{fake.format_log()}"
        yield client
    finally:
        ready.cancel()
        await client.close()
        await asyncio.wait_for(runner, 10)


def test_apply_endpoints_sets_and_restores() -> None:
    apply_endpoints("http://127.0.0.1:1/api/v10/", "ws://127.0.0.1:1/gateway")
    assert current_endpoints() == ("http://127.0.0.1:1/api/v10", "ws://127.0.0.1:1/gateway")
    assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:1/api/v10/users/@me"
    apply_endpoints(None, None)
    assert current_endpoints() == (DISCORD_API_BASE, DISCORD_GATEWAY_URL)
    with pytest.raises(ValueError):
        apply_endpoints("127.0.0.1:1/api", None)
    with pytest.raises(ValueError):
        apply_endpoints(None, "http://127.0.0.1:1/gateway")


async def test_login_ready_and_sync(fake: FakeDiscord, bot: PingBot) -> None:
    assert bot.user is not None and bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None and guild.get_channel(fake.channel_id) is not None
    assert fake.session is not None and fake.session.intents == discord.Intents.default().value

    ping = fake.registered_command("ping")
    options = {o["name"]: o for o in ping["options"]}
    assert ping["description"] == "Answer with a pong file and a button."
    count = {
        k: options["count"].get(k) for k in ("description", "type", "required", "min_value", "max_value")
    }
    assert count == {
        "description": "How many pongs",
        "type": 4,
        "required": False,
        "min_value": 1,
        "max_value": 5,
    }
    assert options["echo"]["type"] == 11
    # discord.py asks for the transport compression it can decode; the fake must speak it.
    connect = next(e for e in fake.log if e["method"] == "WS" and e["summary"].startswith("connect"))
    assert f"compress={_ActiveDecompressionContext.COMPRESSION_TYPE}" in connect["summary"]
    assert not fake.unhandled


async def test_command_defer_followup_and_click(fake: FakeDiscord, bot: PingBot) -> None:
    inter = await fake.send_command("ping", {"count": 2}, attachment_size_limit=5000)
    followup = await inter.wait_for_followup(timeout=10)

    callback = inter.callback
    assert callback is not None and callback["body"]["type"] == 5
    assert callback["time"] - inter.created < 3.0
    assert followup["files"] == [
        {"field": "files[0]", "filename": "pong.txt", "size": 800, "content_type": "application/octet-stream"}
    ]
    message = fake.message(followup["message_id"])
    assert message["content"] == "pong x2" and message["attachments"][0]["size"] == 800
    # The first follow-up after a deferral becomes the deferred message.
    assert int(message["id"]) == inter.original_id
    assert bot.limits == [5000]

    click = await fake.click(message, "ping:again", user=fake.user(2))
    answer = await click.wait_for_callback(timeout=10)
    assert answer["body"]["type"] == 4
    assert answer["body"]["data"]["content"] == "pong again"
    assert answer["body"]["data"]["flags"] & 64
    assert bot.clicks == [int(fake.user(2)["user"]["id"])]

    edit = await fake.click(message, "ping:edit")
    update = await edit.wait_for_callback(timeout=10)
    assert update["body"]["type"] == 7 and [f["filename"] for f in update["files"]] == ["edit.txt"]
    edited = fake.message(message["id"])
    assert edited["content"] == "edited"
    assert [(a["filename"], a["size"]) for a in edited["attachments"]] == [("edit.txt", 60)]
    fake.print_log(inter)


async def test_attachment_option_is_downloaded_from_the_fake_cdn(fake: FakeDiscord, bot: PingBot) -> None:
    seed = fake.add_attachment("seed.mid", b"MThd" + bytes(96))
    inter = await fake.send_command("ping", attachment=seed)
    followup = await inter.wait_for_followup(timeout=10)
    assert "echo 100 bytes" in followup["body"]["content"]
    assert len(fake.downloads) == 1 and fake.downloads[0].endswith("/seed.mid")


async def test_rate_limited_followup_is_retried(fake: FakeDiscord, bot: PingBot) -> None:
    fake.rate_limit_next("POST /api/v10/webhooks/", retry_after=0.2)
    inter = await fake.send_command("ping")
    await inter.wait_for_followup(timeout=10)
    posts = [e for e in inter.events if e["kind"] == "followup"]
    assert [e["status"] for e in posts] == [429, 200]
    assert posts[1]["time"] - posts[0]["time"] >= 0.2


async def test_server_error_on_callback_is_retried(fake: FakeDiscord, bot: PingBot) -> None:
    fake.fail_next("/callback", status=502)
    inter = await fake.send_command("ping")
    await inter.wait_for_followup(timeout=10)  # discord.py waits 1 s before its retry
    assert [e["status"] for e in inter.events if e["kind"] == "callback"] == [502, 200]


async def test_callback_after_three_seconds_is_unknown_interaction(fake: FakeDiscord, bot: PingBot) -> None:
    fake.callback_deadline = 0.0  # every answer is late, as if the bot had taken more than 3 s
    inter = await fake.send_command("ping")
    late = await inter.wait_for(lambda e: e["kind"] == "callback", timeout=10)
    assert late["status"] == 404 and late["error_code"] == 10062


async def test_upload_over_the_interaction_limit_is_refused(fake: FakeDiscord, bot: PingBot) -> None:
    inter = await fake.send_command("ping", {"count": 2}, attachment_size_limit=500)
    refused = await inter.wait_for(lambda e: e["kind"] == "followup", timeout=10)
    assert refused["status"] == 413 and refused["error_code"] == 40005
    for _ in range(100):  # the error reaches the tree's handler just after the refused request
        if bot.errors:
            break
        await asyncio.sleep(0.02)
    assert isinstance(bot.errors[0], app_commands.CommandInvokeError)
    assert isinstance(bot.errors[0].original, discord.HTTPException) and bot.errors[0].original.code == 40005


async def test_expired_token_answers_invalid_webhook_token(fake: FakeDiscord, bot: PingBot) -> None:
    inter = await fake.send_command("ping")
    await inter.wait_for_followup(timeout=10)
    fake.expire_token(inter)
    async with aiohttp.ClientSession() as session:
        webhook = discord.Webhook.partial(fake.application_id, inter.token, session=session)
        with pytest.raises(discord.HTTPException) as raised:
            await webhook.send("too late", wait=True)
    assert raised.value.status == 401 and raised.value.code == 50027


async def test_reconnect_resumes_at_resume_gateway_url(fake: FakeDiscord, bot: PingBot) -> None:
    session = fake.session
    await fake.request_reconnect()
    await fake.wait_for(lambda e: e["method"] == "WS" and e["summary"].startswith("-> RESUMED"), timeout=10)
    assert fake.session is session
    assert session is not None and session.connection is not None
    assert session.connection.path == "/resume-gateway"
    inter = await fake.send_command("ping")  # dispatches still reach the bot
    await inter.wait_for_followup(timeout=10)


async def test_a_wrong_token_fails_login_without_retrying(fake: FakeDiscord) -> None:
    apply_endpoints(fake.api_base, fake.gateway_url)
    client = PingBot()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.start("not-the-token")
    finally:
        await client.close()
    assert fake.log[0]["path"].endswith("/users/@me") and fake.log[0]["status"] == 401
    assert [e["path"] for e in fake.log].count(fake.log[0]["path"]) == 1  # refused once, not retried


async def test_gateway_closes_4004_on_a_wrong_token(fake: FakeDiscord) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws,
    ):
        hello = await ws.receive_json(timeout=5)
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})
        closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4004


async def test_unknown_route_is_a_logged_404(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.api_base}/guilds/1/emojis") as response:
            assert response.status == 404
            assert await response.json() == {"message": "404: Not Found", "code": 0}
    assert fake.unhandled == ["GET /api/v10/guilds/1/emojis"]
