"""A protocol-level fake of Discord on 127.0.0.1 for end-to-end tests of the real discord.py client.

It speaks Discord's REST API (v10 JSON shapes, multipart uploads, rate-limit answers) and gateway (HELLO,
IDENTIFY, READY, GUILD_CREATE, heartbeats, RESUME; plain, zlib-stream or zstd-stream transport
compression) well enough for discord.py to log in, sync its command tree, and answer interactions. Tests
drive it from the user's side (`send_command`, `click`) and read what the bot did from `log`.

    async with FakeDiscord() as fake:
        apply_endpoints(fake.api_base, fake.gateway_url)
        ...start the bot with fake.token...
        inter = await fake.send_command("compose", {"length": 500})
        followup = await inter.wait_for_followup(timeout=30)
        fake.print_log(inter)

It imports nothing from discord.py, so it tests the client rather than agreeing with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import math
import mimetypes
import random
import secrets
import socket
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from aiohttp import WSMsgType, web

from bot.options import UPLOAD_LIMIT_BYTES

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
DEFAULT_ATTACHMENT_LIMIT = UPLOAD_LIMIT_BYTES  # what Discord gives a guild without boosts
INTERACTION_TOKEN_TTL = 15 * 60.0  # follow-ups work for 15 minutes after the interaction
CALLBACK_DEADLINE = 3.0  # the first answer must come within 3 s, or the interaction is gone

# Permission bits the bot is given in the fake channel: what a music bot needs, nothing administrative.
_BOT_PERMISSIONS = sum(
    1 << bit
    for bit in (
        10,  # VIEW_CHANNEL
        11,  # SEND_MESSAGES
        14,  # EMBED_LINKS
        15,  # ATTACH_FILES
        16,  # READ_MESSAGE_HISTORY
        18,  # USE_EXTERNAL_EMOJIS
        31,  # USE_APPLICATION_COMMANDS
        38,  # SEND_MESSAGES_IN_THREADS
    )
)
_MEMBER_PERMISSIONS = _BOT_PERMISSIONS

CALLBACK_TYPES = {
    1: "PONG",
    4: "CHANNEL_MESSAGE_WITH_SOURCE",
    5: "DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE",
    6: "DEFERRED_UPDATE_MESSAGE",
    7: "UPDATE_MESSAGE",
    8: "APPLICATION_COMMAND_AUTOCOMPLETE_RESULT",
    9: "MODAL",
}
_EPHEMERAL = 1 << 6
_LOADING = 1 << 7

# Gateway opcodes and the close codes the fake uses.
_DISPATCH, _HEARTBEAT, _IDENTIFY, _RESUME, _RECONNECT = 0, 1, 2, 6, 7
_INVALID_SESSION, _HELLO, _HEARTBEAT_ACK = 9, 10, 11
_CLOSE_UNKNOWN_OPCODE, _CLOSE_DECODE, _CLOSE_NOT_AUTHENTICATED, _CLOSE_AUTH_FAILED = 4001, 4002, 4003, 4004
_CLOSE_ALREADY_AUTHENTICATED, _CLOSE_INVALID_VERSION = 4005, 4012

_ENTRY = web.RequestKey("entry", dict)  # the log entry of the request being handled


class ApiError(Exception):
    """An error answer in Discord's JSON shape: {"message": ..., "code": ...}."""

    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(f"{status} {message} (code {code})")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return _json_response(body, status=self.status)


def _json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Exactly "application/json": discord.py compares the header verbatim and treats anything else (such as
    # aiohttp's "application/json; charset=utf-8") as text, then fails on str["username"].
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _unauthorized() -> ApiError:
    return ApiError(401, 0, "401: Unauthorized")


def _unknown_webhook() -> ApiError:
    return ApiError(404, 10015, "Unknown Webhook")


def _invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


def _unknown_interaction() -> ApiError:
    return ApiError(404, 10062, "Unknown interaction")


def _unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def _check_message_limits(body: dict) -> None:
    """Discord's size limits on a message: content 2,000; embed title 256, description 4,096, field value
    1,024, footer 2,048, and 6,000 characters per embed in all."""
    if len(body.get("content") or "") > 2000:
        raise _form_error("content", "Must be 2000 or fewer in length.")
    for i, embed in enumerate(body.get("embeds") or []):
        parts = {
            "title": (embed.get("title") or "", 256),
            "description": (embed.get("description") or "", 4096),
            "footer.text": ((embed.get("footer") or {}).get("text") or "", 2048),
        }
        for j, f in enumerate(embed.get("fields") or []):
            parts[f"fields.{j}.value"] = (f.get("value") or "", 1024)
            parts[f"fields.{j}.name"] = (f.get("name") or "", 256)
        for where, (text, limit) in parts.items():
            if len(text) > limit:
                raise _form_error(f"embeds.{i}.{where}", f"Must be {limit} or fewer in length.")
        if sum(len(text) for text, _ in parts.values()) > 6000:
            raise _form_error(f"embeds.{i}", "Embed size exceeds maximum size of 6000")


def _form_error(where: str, message: str) -> ApiError:
    return ApiError(
        400,
        50035,
        "Invalid Form Body",
        {where: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": message}]}},
    )


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _size(n: int) -> str:
    return (
        f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"
    )


class _Snowflakes:
    """Discord-style ids: milliseconds since 2015 in the high bits, so discord.py's created_at makes sense."""

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(value, self._last + 1)
        return self._last


@dataclass
class _Upload:
    field: str
    filename: str
    data: bytes
    content_type: str | None


@dataclass(eq=False)
class _Connection:
    """One gateway websocket, with its transport compressor (one stream per connection, as Discord does)."""

    ws: web.WebSocketResponse
    compress: str | None
    path: str
    compressor: Callable[[bytes], bytes] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, payload: dict) -> None:
        raw = json.dumps(payload, separators=(",", ":"))
        # The lock keeps compress-then-send atomic: the stream must reach the client in compression order.
        async with self.lock:
            if self.ws.closed:
                return
            if self.compressor is None:
                await self.ws.send_str(raw)
            else:
                await self.ws.send_bytes(self.compressor(raw.encode()))


def _zlib_stream() -> Callable[[bytes], bytes]:
    context = zlib.compressobj()
    # Each message ends in a Z_SYNC_FLUSH (00 00 ff ff): that is how discord.py knows a message is complete.
    return lambda data: context.compress(data) + context.flush(zlib.Z_SYNC_FLUSH)


def _zstd_stream() -> Callable[[bytes], bytes] | None:
    """discord.py asks for zstd-stream when it can decompress it, i.e. when zstandard (or 3.14's
    compression.zstd) is importable; the fake runs in the same interpreter, so it can then compress it."""
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            return None
        compressor = zstd.ZstdCompressor()
        return lambda data: compressor.compress(data, mode=zstd.ZstdCompressor.FLUSH_BLOCK)
    cobj = zstandard.ZstdCompressor().compressobj()
    return lambda data: cobj.compress(data) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)


@dataclass(eq=False)
class _Session:
    """A gateway session: survives its connection so that RESUME can replay what was missed."""

    session_id: str
    intents: int
    connection: _Connection | None
    seq: int = 0
    history: list[dict] = field(default_factory=list)

    async def dispatch(self, event: str, data: Any) -> int:
        self.seq += 1
        payload = {"op": _DISPATCH, "t": event, "s": self.seq, "d": data}
        self.history.append(payload)
        if self.connection is not None:
            await self.connection.send(payload)
        return self.seq


@dataclass(eq=False)
class FakeInteraction:
    """One interaction the fake dispatched, and what the bot has done with it so far."""

    fake: FakeDiscord
    id: int
    token: str
    type: int
    payload: dict
    created: float
    attachment_size_limit: int
    expires_at: float
    acknowledged: int | None = None  # the callback type, once the bot has answered
    original_id: int | None = None
    loading: bool = False  # deferred with type 5 and not yet given content
    message_ids: list[int] = field(default_factory=list)

    @property
    def events(self) -> list[dict]:
        """This interaction's requests so far, in order: callback, edits, follow-ups (failed ones too)."""
        return self.fake.events_for(self)

    @property
    def callback(self) -> dict | None:
        """The successful callback request, if any."""
        return next((e for e in self.events if e["kind"] == "callback" and e["status"] < 300), None)

    @property
    def followups(self) -> list[dict]:
        """Successful follow-up requests."""
        return [e for e in self.events if e["kind"] == "followup" and e["status"] < 300]

    @property
    def original_message(self) -> dict | None:
        return None if self.original_id is None else self.fake.messages.get(self.original_id)

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        """The first of this interaction's requests for which `predicate(entry)` holds, waiting for it."""
        return await self.fake.wait_for(
            lambda e: e.get("interaction") == self.id and e["method"] != "WS" and predicate(e),
            timeout,
            what=f"interaction {self.id}",
            interaction=self,
        )

    async def wait_for_callback(self, timeout: float = 10.0) -> dict:
        return await self.wait_for(lambda e: e["kind"] == "callback" and e["status"] < 300, timeout)

    async def wait_for_followup(self, timeout: float = 10.0, *, count: int = 1) -> dict:
        """The `count`-th successful follow-up."""
        await self.wait_for(
            lambda e: e["kind"] == "followup" and e["status"] < 300 and len(self.followups) >= count, timeout
        )
        return self.followups[count - 1]

    def expire(self) -> None:
        """Make the token behave as after 15 minutes: webhook routes answer 401 Invalid Webhook Token."""
        self.expires_at = 0.0


@dataclass
class _Injection:
    match: str
    status: int
    retry_after: float = 0.0
    is_global: bool = False
    body: dict | None = None
    count: int = 1
    share: float = 1.0  # below 1: each matching request fails with this probability (count is ignored)
    rng: random.Random | None = None


class FakeDiscord:
    """Discord's REST API, CDN and gateway for one bot, one guild and one text channel, on 127.0.0.1."""

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 41_250,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT,
        token_ttl: float = INTERACTION_TOKEN_TTL,
        callback_deadline: float | None = CALLBACK_DEADLINE,
    ) -> None:
        self._snowflake = _Snowflakes()
        self.application_id: int = self._snowflake()
        self.bot_user_id: int = self.application_id  # a bot user shares its application's id
        self.owner_id: int = self._snowflake()
        self.guild_id: int = self._snowflake()
        self.channel_id: int = self._snowflake()
        self.token: str = (
            f"{secrets.token_urlsafe(18)}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"
        )
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.attachment_size_limit = attachment_size_limit
        self.token_ttl = token_ttl
        self.callback_deadline = callback_deadline

        self.log: list[dict] = []
        self.unhandled: list[str] = []  # "METHOD /path" of requests no route of the fake knows
        self.messages: dict[int, dict] = {}  # every message the bot posted or edited, latest version
        self.global_commands: dict[str, dict] = {}  # name -> command as stored (with its id)
        self.guild_commands: dict[int, dict[str, dict]] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.heartbeats = 0
        self.downloads: list[str] = []  # CDN paths fetched
        self._by_token: dict[str, FakeInteraction] = {}
        self._files: dict[int, tuple[str, bytes, str]] = {}  # attachment id -> (filename, data, type)
        self._injections: list[_Injection] = []
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future[dict]]] = []
        self._sessions: dict[str, _Session] = {}
        self._session: _Session | None = None  # the latest identified one: where dispatches go
        self._connections: list[_Connection] = []
        self._ready: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._started = time.monotonic()
        self.port = 0

    # ----------------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._ready = asyncio.Event()
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        p = API_PREFIX
        app.add_routes(
            [
                web.get("/gateway", self._gateway),
                web.get("/resume-gateway", self._gateway),
                web.get(f"{p}/gateway", self._get_gateway),
                web.get(f"{p}/gateway/bot", self._get_gateway_bot),
                web.get(f"{p}/users/@me", self._get_me),
                web.get(f"{p}/oauth2/applications/@me", self._get_application),
                web.get(f"{p}/applications/{{app}}/commands", self._get_commands),
                web.put(f"{p}/applications/{{app}}/commands", self._put_commands),
                web.get(f"{p}/applications/{{app}}/guilds/{{guild}}/commands", self._get_commands),
                web.put(f"{p}/applications/{{app}}/guilds/{{guild}}/commands", self._put_commands),
                web.post(f"{p}/interactions/{{iid}}/{{token}}/callback", self._post_callback),
                web.post(f"{p}/webhooks/{{app}}/{{token}}", self._post_followup),
                web.get(f"{p}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._get_webhook_message),
                web.patch(f"{p}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._patch_webhook_message),
                web.delete(f"{p}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._delete_webhook_message),
                web.post(f"{p}/channels/{{cid}}/messages", self._post_channel_message),
                web.get("/attachments/{cid}/{aid}/{filename}", self._get_cdn),
                web.get("/media/attachments/{cid}/{aid}/{filename}", self._get_cdn),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._started = time.monotonic()

    async def stop(self) -> None:
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake Discord is shutting down")
        for _, future in self._waiters:
            future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        # A different path from gateway_url, so a test can see that discord.py resumed where READY said.
        return f"ws://127.0.0.1:{self.port}/resume-gateway"

    # ------------------------------------------------------------------------------------ test controls

    def user(self, n: int = 1, *, name: str | None = None) -> dict:
        """A guild member (with its "user"), the same for the same n and distinct across n."""
        user_id = self.guild_id + 1000 + n  # clear of the fake's other ids, which are far apart in time
        username = name or f"user{n}"
        return {
            "user": {
                "id": str(user_id),
                "username": username,
                "global_name": username.title(),
                "discriminator": "0",
                "avatar": None,
                "bot": False,
                "public_flags": 0,
            },
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "communication_disabled_until": None,
            "permissions": str(_MEMBER_PERMISSIONS),
        }

    def add_attachment(self, filename: str, data: bytes, content_type: str = "audio/midi") -> dict:
        """A Discord attachment object for a file a user uploads; the fake's CDN serves its url."""
        return self._store_file(filename, data, content_type, self.channel_id)

    def file_data(self, attachment: dict | int | str) -> bytes:
        """The bytes behind an attachment the fake holds (uploaded by a user or by the bot)."""
        att_id = int(attachment["id"] if isinstance(attachment, dict) else attachment)
        return self._files[att_id][1]

    def rate_limit_next(
        self, route_substring: str, retry_after: float = 0.2, *, is_global: bool = False, count: int = 1
    ) -> None:
        """The next `count` requests whose "METHOD /path" contains `route_substring` answer 429."""
        self._injections.append(_Injection(route_substring, 429, retry_after, is_global, count=count))

    def fail_next(
        self, route_substring: str, status: int = 502, *, body: dict | None = None, count: int = 1
    ) -> None:
        """The next `count` matching requests answer `status` (a 5xx by default, which discord.py retries)."""
        self._injections.append(_Injection(route_substring, status, body=body, count=count))

    def fail_share(self, route_substring: str, share: float, status: int = 500, seed: int = 0) -> None:
        """From now on a `share` of the matching requests (chosen by a seeded RNG) answer `status`."""
        self._injections.append(_Injection(route_substring, status, share=share, rng=random.Random(seed)))

    def heal(self) -> None:
        """Stop every injected failure: Discord answers normally again."""
        self._injections.clear()

    def expire_token(self, interaction: FakeInteraction | str) -> None:
        """Make an interaction token answer as it does after 15 minutes."""
        inter = interaction if isinstance(interaction, FakeInteraction) else self._by_token[interaction]
        inter.expire()

    def registered_command(self, name: str, guild_id: int | None = None) -> dict:
        """A command as the bot registered it (guild commands first), with the id the fake gave it."""
        guild_id = self.guild_id if guild_id is None else guild_id
        found = self.guild_commands.get(guild_id, {}).get(name) or self.global_commands.get(name)
        if found is None:
            known = sorted({*self.global_commands, *self.guild_commands.get(guild_id, {})})
            raise LookupError(f"no command {name!r} registered; the bot registered {known}")
        return found

    def message(self, message_id: int | str) -> dict:
        return self.messages[int(message_id)]

    def events_for(self, interaction: FakeInteraction | int) -> list[dict]:
        """That interaction's REST requests in order (callback, edits, follow-ups), failed ones included."""
        iid = interaction.id if isinstance(interaction, FakeInteraction) else int(interaction)
        return [e for e in self.log if e.get("interaction") == iid and e["method"] != "WS"]

    async def wait_for(
        self,
        predicate: Callable[[dict], bool],
        timeout: float = 10.0,
        *,
        what: str = "a matching request",
        interaction: FakeInteraction | None = None,
    ) -> dict:
        """The first log entry (past or coming) for which `predicate` holds."""
        for entry in self.log:
            if predicate(entry):
                return entry
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        waiter = (predicate, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"nothing matched for {what} within {timeout} s; log so far:\n{self.format_log(interaction)}"
            ) from None
        finally:
            self._waiters.remove(waiter)

    async def wait_until_connected(self, timeout: float = 20.0) -> None:
        """Until a client has identified and been sent its guild."""
        assert self._ready is not None, "start the fake first"
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"no client identified within {timeout} s:\n{self.format_log()}") from None

    # --------------------------------------------------------------------------------- gateway controls

    async def dispatch(self, event: str, data: Any) -> int:
        """Send a gateway DISPATCH to the current session; returns its sequence number."""
        if self._session is None:
            raise RuntimeError("no client has identified on the gateway")
        seq = await self._session.dispatch(event, data)
        self._record_ws(f"-> {event}", seq=seq)
        return seq

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session: the client should RESUME."""
        conn = self._current_connection()
        self._record_ws("-> RECONNECT (op 7)")
        await conn.send({"op": _RECONNECT, "d": None, "s": None, "t": None})

    async def disconnect(self, code: int = 4000) -> None:
        """Close the current gateway connection with `code`, as a network drop or Discord restart would."""
        conn = self._current_connection()
        self._record_ws(f"-> close {code}")
        await conn.ws.close(code=code, message=b"closed by the fake")

    def _gateway_path(self) -> str:
        """The path the current session is connected on: /gateway, or /resume-gateway after a resume."""
        conn = self._session.connection if self._session is not None else None
        return conn.path if conn is not None else "/gateway"

    def _current_connection(self) -> _Connection:
        if self._session is None or self._session.connection is None:
            raise RuntimeError("no connected gateway session")
        return self._session.connection

    @property
    def session(self) -> _Session | None:
        return self._session

    # ------------------------------------------------------------------------------------- interactions

    async def send_command(
        self,
        name: str,
        options: list[dict] | Mapping[str, Any] | None = None,
        *,
        user: dict | int | None = None,
        attachment: dict | None = None,
        attachment_size_limit: int | None = None,
        app_permissions: int | None = None,
        locale: str = "en-US",
        token_ttl: float | None = None,
        forged: bool = False,
    ) -> FakeInteraction:
        """A user runs a slash command: INTERACTION_CREATE type 2 for a command the bot registered.

        `options` is Discord's list of {"name", "type", "value"}, or a {name: value} mapping whose types are
        taken from the registered command. `attachment` (from `add_attachment`) fills the command's
        attachment option. Values Discord's client would refuse (out of range, unknown, missing) raise,
        unless `forged`: a hostile client's payload, sent as it is.
        """
        await self.wait_until_connected()
        command = self.registered_command(name)
        opts, resolved = self._command_options(command, options, attachment, check=not forged)
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": command.get("type", 1)}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(
            2,
            data,
            user,
            attachment_size_limit,
            app_permissions,
            locale,
            token_ttl,
            summary=_describe_command(data),
        )

    async def click(
        self,
        message: dict | int | str,
        custom_id: str,
        *,
        user: dict | int | None = None,
        values: list[str] | None = None,
        attachment_size_limit: int | None = None,
        token_ttl: float | None = None,
    ) -> FakeInteraction:
        """A user clicks a button (or picks `values` in a select) on a message the bot posted."""
        await self.wait_until_connected()
        message_id = int(message["id"] if isinstance(message, dict) else message)
        stored = self.messages.get(message_id)
        if stored is None:
            raise LookupError(f"message {message_id} was not posted by the bot through the fake")
        component = _find_component(stored.get("components", []), custom_id)
        if component is None:
            ids = _custom_ids(stored.get("components", []))
            raise LookupError(f"message {message_id} has no component {custom_id!r}; it has {ids}")
        if component.get("disabled"):
            raise ValueError(
                f"component {custom_id!r} is disabled: Discord's client would not let a user click it"
            )
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] != 2:
            data["values"] = list(values or [])
        summary = f"click {custom_id!r} on message {message_id}"
        return await self._interact(
            3, data, user, attachment_size_limit, None, "en-US", token_ttl, message=stored, summary=summary
        )

    async def _interact(
        self,
        itype: int,
        data: dict,
        user: dict | int | None,
        attachment_size_limit: int | None,
        app_permissions: int | None,
        locale: str,
        token_ttl: float | None,
        *,
        summary: str,
        message: dict | None = None,
    ) -> FakeInteraction:
        member = self.user(user) if isinstance(user, int) else (user or self.user(1))
        limit = self.attachment_size_limit if attachment_size_limit is None else attachment_size_limit
        perms = str(_BOT_PERMISSIONS if app_permissions is None else app_permissions)
        iid, token = self._snowflake(), f"aW50ZXJhY3Rpb246{secrets.token_urlsafe(96)}"
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "guild_id": str(self.guild_id),
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "channel_id": str(self.channel_id),
            "channel": {**self._channel_object(), "permissions": perms},
            "member": member,
            "token": token,
            "version": 1,
            "app_permissions": perms,
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": limit,
        }
        if message is not None:
            payload["message"] = message
        now = time.monotonic()
        ttl = self.token_ttl if token_ttl is None else token_ttl
        inter = FakeInteraction(self, iid, token, itype, payload, now, limit, now + ttl)
        if message is not None:
            inter.original_id = int(message["id"])  # @original of a component interaction is its message
        self.interactions[iid] = inter
        self._by_token[token] = inter
        if self._session is None:
            raise RuntimeError("no client has identified on the gateway")
        seq = await self._session.dispatch("INTERACTION_CREATE", payload)
        who = member["user"]["username"]
        self._record(
            {
                **self._entry("WS", self._gateway_path(), now),
                "kind": "dispatch",
                "status": 0,
                "interaction": iid,
                "summary": f"INTERACTION_CREATE s={seq}: {who}: {summary}",
            }
        )
        return inter

    def _command_options(
        self,
        command: dict,
        options: list[dict] | Mapping[str, Any] | None,
        attachment: dict | None,
        check: bool = True,
    ) -> tuple[list[dict], dict]:
        declared = {o["name"]: o for o in command.get("options", [])}
        if isinstance(options, Mapping):
            options = [{"name": k, "value": v} for k, v in options.items()]
        opts = [dict(o) for o in options or []]
        if attachment is not None:
            slot = next((o for o in declared.values() if o.get("type") == 11), None)
            if slot is None:
                raise ValueError(f"/{command['name']} has no attachment option")
            opts.append({"name": slot["name"], "type": 11, "value": attachment})
        resolved: dict[str, dict] = {}
        subcommand = any(o.get("type") in (1, 2) for o in declared.values())
        for opt in opts:
            spec = declared.get(opt["name"])
            if spec is None:
                raise ValueError(
                    f"/{command['name']} has no option {opt['name']!r}; it has {sorted(declared)}"
                )
            opt.setdefault("type", spec.get("type"))
            if not subcommand and check:
                _check_option(command["name"], spec, opt["value"])
            if opt["type"] == 11:
                att = (
                    opt["value"] if isinstance(opt["value"], dict) else self._attachment_object(opt["value"])
                )
                opt["value"] = str(att["id"])
                resolved.setdefault("attachments", {})[str(att["id"])] = att
            elif opt["type"] == 6 and isinstance(opt["value"], dict):
                member = opt["value"]
                uid = member["user"]["id"]
                opt["value"] = uid
                resolved.setdefault("users", {})[uid] = member["user"]
                resolved.setdefault("members", {})[uid] = {k: v for k, v in member.items() if k != "user"}
        if not subcommand:
            given = {o["name"] for o in opts}
            missing = [n for n, o in declared.items() if o.get("required") and n not in given]
            if missing:
                raise ValueError(f"/{command['name']} needs {missing}: Discord's client would not send it")
        return opts, resolved

    # ------------------------------------------------------------------------------------------ logging

    def format_log(self, interaction: FakeInteraction | None = None) -> str:
        """The log as text; with an interaction, only its events, timed from its creation."""
        if interaction is None:
            entries, t0 = self.log, self._started
            title = "fake Discord log (times from the fake's start)"
        else:
            entries, t0 = [e for e in self.log if e.get("interaction") == interaction.id], interaction.created
            title = f"interaction {interaction.id} (type {interaction.type}; times from its creation)"
        lines = [title]
        for e in entries:
            status = "" if e["method"] == "WS" else str(e["status"])
            lines.append(
                f"  +{e['time'] - t0:8.3f}s  {e['method']:<6} {_short_path(e['path']):<54} {status:>3}  {e['summary']}"
            )
            for f in e.get("files", []):
                lines.append(
                    f"  {'':>10}  {'':<6} file {f['filename']} ({_size(f['size'])}, {f['content_type']})"
                )
        return "\n".join(lines)

    def print_log(self, interaction: FakeInteraction | None = None, file: TextIO | None = None) -> None:
        print(self.format_log(interaction), file=file or sys.stdout)

    def _entry(self, method: str, path: str, started: float) -> dict:
        return {
            "time": started,
            "method": method,
            "path": path,
            "query": {},
            "status": None,
            "kind": "rest",
            "summary": "",
            "interaction": None,
            "files": [],
            "body": None,
            "message_id": None,
            "error_code": None,
        }

    def _record(self, entry: dict) -> None:
        self.log.append(entry)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(entry):
                future.set_result(entry)

    def _record_ws(self, summary: str, *, path: str | None = None, seq: int | None = None) -> None:
        path = path or self._gateway_path()
        if seq is not None:
            summary = f"{summary} s={seq}"
        self._record(
            {**self._entry("WS", path, time.monotonic()), "kind": "gateway", "status": 0, "summary": summary}
        )

    # --------------------------------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.path in ("/gateway", "/resume-gateway") and request.headers.get("Upgrade"):
            return await handler(request)  # the gateway logs its own traffic
        entry = self._entry(request.method, request.path, time.monotonic())
        entry["query"] = dict(request.query)
        entry["kind"] = _kind_for(request.method, request.path)
        entry["interaction"] = self._interaction_id_from_path(request.path)
        request[_ENTRY] = entry
        try:
            injected = self._take_injection(request.method, request.path)
            if injected is not None:
                await request.release()
                response = self._injected_response(injected, entry)
            else:
                response = await handler(request)
        except ApiError as exc:
            await request.release()
            response = exc.response()
            entry["error_code"] = exc.code
            entry["summary"] = f"{entry['summary']} -> {exc.message} ({exc.code})".lstrip(" ->")
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            await request.release()
            response = _json_response({"message": "404: Not Found", "code": 0}, status=404)
            entry["kind"] = "unhandled"
            entry["summary"] = "NO ROUTE in the fake"
            self.unhandled.append(f"{request.method} {request.path}")
            _log.warning("fake Discord has no route for %s %s", request.method, request.path)
        entry["status"] = response.status
        self._record(entry)
        return response

    def _take_injection(self, method: str, path: str) -> _Injection | None:
        route = f"{method} {path}"
        for inj in self._injections:
            if inj.match in route and inj.share < 1.0:
                if inj.rng is not None and inj.rng.random() < inj.share:
                    return inj
                continue
            if inj.match in route:
                inj.count -= 1
                if inj.count <= 0:
                    self._injections.remove(inj)
                return inj
        return None

    def _injected_response(self, inj: _Injection, entry: dict) -> web.Response:
        entry["injected"] = True
        if inj.status != 429:
            entry["summary"] = f"injected failure {inj.status}"
            body = inj.body or {"message": f"{inj.status}: {_reason(inj.status)}", "code": 0}
            return _json_response(body, status=inj.status)
        entry["summary"] = f"injected 429, retry_after {inj.retry_after} s" + (
            " (global)" if inj.is_global else ""
        )
        headers = {
            # discord.py treats a 429 without Via as Cloudflare's ban and raises instead of retrying.
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(inj.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + inj.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{inj.retry_after:.3f}",
            "X-RateLimit-Bucket": _bucket(entry["method"], entry["path"]),
            "X-RateLimit-Scope": "global" if inj.is_global else "user",
        }
        if inj.is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": inj.retry_after,
            "global": inj.is_global,
        }
        return _json_response(body, status=429, headers=headers)

    def _json(self, request: web.Request, body: Any, status: int = 200) -> web.Response:
        """A success answer with the rate-limit headers Discord sends on every API response."""
        headers = {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": _bucket(request.method, request.path),
        }
        if status == 204:
            return web.Response(status=204, headers=headers)
        return _json_response(body, status=status, headers=headers)

    def _interaction_id_from_path(self, path: str) -> int | None:
        parts = path.split("/")
        if path.startswith(f"{API_PREFIX}/interactions/") and len(parts) > 4 and parts[4].isdigit():
            return int(parts[4]) if int(parts[4]) in self.interactions else None
        if path.startswith(f"{API_PREFIX}/webhooks/") and len(parts) > 5:
            inter = self._by_token.get(parts[5])
            return inter.id if inter else None
        return None

    def _check_bot_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise _unauthorized()

    # --------------------------------------------------------------------------------------------- REST

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return self._json(request, {"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        self._check_bot_auth(request)
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return self._json(request, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_me(self, request: web.Request) -> web.Response:
        self._check_bot_auth(request)
        request[_ENTRY]["summary"] = "login"
        return self._json(request, self._bot_user())

    async def _get_application(self, request: web.Request) -> web.Response:
        self._check_bot_auth(request)
        owner = self.user(0, name="owner")["user"] | {"id": str(self.owner_id)}
        app = {
            "id": str(self.application_id),
            "name": "Étude",
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 1 << 23,  # APPLICATION_COMMAND_BADGE, as apps with commands have
            "owner": owner,
            "team": None,
            "bot": self._bot_user(),
            "redirect_uris": [],
            # None: with an endpoint URL set, Discord would send interactions there instead of the gateway.
            "interactions_endpoint_url": None,
            "tags": [],
        }
        return self._json(request, app)

    def _command_store(self, request: web.Request) -> dict[str, dict]:
        self._check_bot_auth(request)
        if request.match_info["app"] != str(self.application_id):
            raise ApiError(403, 50001, "Missing Access")
        guild = request.match_info.get("guild")
        if guild is None:
            return self.global_commands
        if guild != str(self.guild_id):
            raise ApiError(403, 50001, "Missing Access")
        return self.guild_commands.setdefault(int(guild), {})

    async def _get_commands(self, request: web.Request) -> web.Response:
        return self._json(request, list(self._command_store(request).values()))

    async def _put_commands(self, request: web.Request) -> web.Response:
        store = self._command_store(request)
        sent = await request.json()
        request[_ENTRY]["body"] = sent
        if not isinstance(sent, list):
            raise _form_error("_root", "Must be an array")
        for i, cmd in enumerate(sent):
            _validate_command(i, cmd)
        guild = request.match_info.get("guild")
        new: dict[str, dict] = {}
        for cmd in sent:
            old = store.get(cmd["name"])
            # Discord keeps a command's id when an overwrite names it again.
            cid = old["id"] if old and old.get("type", 1) == cmd.get("type", 1) else str(self._snowflake())
            stored = {
                "default_member_permissions": None,
                "nsfw": False,
                "type": 1,
                "options": [],
                **cmd,
                "id": cid,
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
            }
            if guild is not None:
                stored["guild_id"] = guild
            new[cmd["name"]] = stored
        store.clear()
        store.update(new)
        where = f"guild {guild}" if guild else "global"
        request[_ENTRY]["summary"] = f"sync {where}: {', '.join('/' + n for n in new) or 'nothing'}"
        return self._json(request, list(new.values()))

    async def _post_callback(self, request: web.Request) -> web.Response:
        entry = request[_ENTRY]
        inter = self.interactions.get(int(request.match_info["iid"]))
        if inter is None or inter.token != request.match_info["token"]:
            raise _unknown_interaction()
        body, files = await _read_body(request)
        entry["body"], entry["files"] = body, [_file_entry(u) for u in files]
        ctype = body.get("type")
        data = body.get("data") or {}
        entry["summary"] = f"callback {ctype} {CALLBACK_TYPES.get(ctype, '?')}{_describe_message(data)}"
        if inter.acknowledged is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if self.callback_deadline is not None and entry["time"] - inter.created > self.callback_deadline:
            raise _unknown_interaction()  # what Discord answers after the 3 seconds
        self._check_upload_sizes(files, inter.attachment_size_limit)
        message: dict | None = None
        if ctype == 4:
            message = self._new_message(data, files, webhook=True, message_type=20 if inter.type == 2 else 0)
            inter.original_id = int(message["id"])
        elif ctype == 5:
            flags = _LOADING | (int(data.get("flags", 0)) & _EPHEMERAL)
            message = self._new_message({"content": "", "flags": flags}, [], webhook=True, message_type=20)
            inter.original_id, inter.loading = int(message["id"]), True
        elif ctype in (6, 7):
            if inter.type != 3:
                raise _form_error("type", "update callbacks are only for component interactions")
            message = self.messages[inter.original_id] if inter.original_id in self.messages else None
            if ctype == 7 and message is not None:
                message = self._edit_message(message, data, files)
        elif ctype in (8, 9):
            pass
        else:
            raise _form_error("type", f"Value {ctype!r} is not a valid interaction callback type")
        inter.acknowledged = ctype
        if message is not None:
            entry["message_id"] = int(message["id"])
            if int(message["id"]) not in inter.message_ids:
                inter.message_ids.append(int(message["id"]))
        if request.query.get("with_response") not in ("1", "true", "True"):
            return self._json(request, None, status=204)
        answer: dict[str, Any] = {"interaction": {"id": str(inter.id), "type": inter.type}}
        if message is not None and ctype in (4, 5):
            answer["interaction"] |= {
                "response_message_id": message["id"],
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": bool(message["flags"] & _EPHEMERAL),
            }
        answer["resource"] = {"type": ctype} | ({"message": message} if message is not None else {})
        return self._json(request, answer)

    def _webhook_interaction(self, request: web.Request) -> FakeInteraction:
        if request.match_info["app"] != str(self.application_id):
            raise _unknown_webhook()
        inter = self._by_token.get(request.match_info["token"])
        if inter is None:
            raise _unknown_webhook()
        if time.monotonic() >= inter.expires_at:
            raise _invalid_webhook_token()
        if inter.acknowledged is None:
            raise _unknown_webhook()  # an interaction's webhook exists only once it has been answered
        return inter

    async def _post_followup(self, request: web.Request) -> web.Response:
        entry = request[_ENTRY]
        body, files = await _read_body(request)
        entry["body"], entry["files"] = body, [_file_entry(u) for u in files]
        entry["summary"] = f"follow-up{_describe_message(body)}"
        inter = self._webhook_interaction(request)
        self._check_upload_sizes(files, inter.attachment_size_limit)
        _check_message_limits(body)
        if inter.loading and inter.original_id in self.messages:
            # Discord's rule: the first follow-up after a deferred ("thinking") answer becomes that
            # message, keeping the deferral's ephemerality, rather than a new one.
            original = self.messages[inter.original_id]
            flags = original["flags"] & _EPHEMERAL
            message = self._edit_message(original, {**body, "flags": flags}, files)
            entry["summary"] += " (took the place of the deferred message)"
        else:
            message = self._new_message(body, files, webhook=True)
        inter.loading = False
        entry["message_id"] = int(message["id"])
        if int(message["id"]) not in inter.message_ids:
            inter.message_ids.append(int(message["id"]))
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(request, message)
        return self._json(request, None, status=204)

    def _webhook_message(self, request: web.Request, inter: FakeInteraction) -> dict:
        mid = request.match_info["mid"]
        message_id = inter.original_id if mid == "@original" else int(mid) if mid.isdigit() else None
        if message_id is None or message_id not in self.messages:
            raise _unknown_message()
        if mid != "@original" and message_id not in inter.message_ids:
            raise _unknown_message()
        request[_ENTRY]["message_id"] = message_id
        return self.messages[message_id]

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        inter = self._webhook_interaction(request)
        return self._json(request, self._webhook_message(request, inter))

    async def _patch_webhook_message(self, request: web.Request) -> web.Response:
        entry = request[_ENTRY]
        body, files = await _read_body(request)
        entry["body"], entry["files"] = body, [_file_entry(u) for u in files]
        entry["summary"] = f"edit {request.match_info['mid']}{_describe_message(body)}"
        inter = self._webhook_interaction(request)
        self._check_upload_sizes(files, inter.attachment_size_limit)
        message = self._webhook_message(request, inter)
        if int(message["id"]) == inter.original_id:
            inter.loading = False
        return self._json(request, self._edit_message(message, body, files))

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        request[_ENTRY]["summary"] = f"delete {request.match_info['mid']}"
        inter = self._webhook_interaction(request)
        message = self._webhook_message(request, inter)
        del self.messages[int(message["id"])]
        return self._json(request, None, status=204)

    async def _post_channel_message(self, request: web.Request) -> web.Response:
        entry = request[_ENTRY]
        self._check_bot_auth(request)
        body, files = await _read_body(request)
        entry["body"], entry["files"] = body, [_file_entry(u) for u in files]
        entry["summary"] = f"channel message{_describe_message(body)}"
        if request.match_info["cid"] != str(self.channel_id):
            raise ApiError(404, 10003, "Unknown Channel")
        self._check_upload_sizes(files, self.attachment_size_limit)
        _check_message_limits(body)
        message = self._new_message(body, files, webhook=False)
        entry["message_id"] = int(message["id"])
        return self._json(request, message)

    async def _get_cdn(self, request: web.Request) -> web.Response:
        aid = request.match_info["aid"]
        stored = self._files.get(int(aid)) if aid.isdigit() else None
        if stored is None or stored[0] != request.match_info["filename"]:
            raise ApiError(404, 0, "404: Not Found")
        filename, data, content_type = stored
        request[_ENTRY]["summary"] = f"download {filename} ({_size(len(data))})"
        self.downloads.append(request.path)
        return web.Response(body=data, content_type=content_type)

    # ----------------------------------------------------------------------------------------- messages

    def _check_upload_sizes(self, files: list[_Upload], limit: int) -> None:
        for upload in files:
            if len(upload.data) > limit:
                raise ApiError(413, 40005, "Request entity too large")

    def _store_file(self, filename: str, data: bytes, content_type: str, channel_id: int) -> dict:
        att_id = self._snowflake()
        self._files[att_id] = (filename, bytes(data), content_type)
        return self._attachment_object(att_id, channel_id)

    def _attachment_object(self, att_id: int | str, channel_id: int | None = None) -> dict:
        filename, data, content_type = self._files[int(att_id)]
        path = f"attachments/{channel_id or self.channel_id}/{att_id}/{filename}"
        # Real CDN links are signed and expire; the query keeps code honest about parsing URLs.
        signed = f"?ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm={secrets.token_hex(32)}&"
        return {
            "id": str(att_id),
            "filename": filename,
            "size": len(data),
            "url": f"{self.base_url}/{path}{signed}",
            "proxy_url": f"{self.base_url}/media/{path}{signed}",
            "content_type": content_type,
        }

    def _uploaded_attachments(self, body: dict, files: list[_Upload], channel_id: int) -> list[dict]:
        described = {str(a.get("id")): a for a in body.get("attachments") or [] if isinstance(a, dict)}
        out = []
        for upload in files:
            index = upload.field.removeprefix("files[").removesuffix("]")
            content_type = _guess_type(upload.filename)
            att = self._store_file(upload.filename, upload.data, content_type, channel_id)
            if described.get(index, {}).get("description"):
                att["description"] = described[index]["description"]
            out.append(att)
        return out

    def _new_message(self, body: dict, files: list[_Upload], *, webhook: bool, message_type: int = 0) -> dict:
        message_id = self._snowflake()
        message: dict[str, Any] = {
            "id": str(message_id),
            "type": message_type,
            "channel_id": str(self.channel_id),
            "guild_id": str(self.guild_id),
            "author": self._bot_user(),
            "content": body.get("content") or "",
            "embeds": body.get("embeds") or [],
            "components": body.get("components") or [],
            "attachments": self._uploaded_attachments(body, files, self.channel_id),
            "flags": int(body.get("flags") or 0),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts")),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
        }
        if webhook:
            message["webhook_id"] = message["application_id"] = str(self.application_id)
        self.messages[message_id] = message
        return message

    def _edit_message(self, message: dict, body: dict, files: list[_Upload]) -> dict:
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = body[key] or ("" if key == "content" else [])
        if "flags" in body and body["flags"] is not None:
            message["flags"] = int(body["flags"])
        new = self._uploaded_attachments(body, files, int(message["channel_id"]))
        if "attachments" in body:
            # The edit lists what stays: existing attachments by id, new ones by their files[n] index.
            keep = {str(a.get("id")) for a in body["attachments"] or []}
            message["attachments"] = [a for a in message["attachments"] if a["id"] in keep] + new
        else:
            message["attachments"] = message["attachments"] + new
        message["flags"] &= ~_LOADING
        message["edited_timestamp"] = _now_iso()
        return message

    # ----------------------------------------------------------------------------------------- payloads

    def _bot_user(self) -> dict:
        return {
            "id": str(self.bot_user_id),
            "username": "Étude",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
            "public_flags": 0,
        }

    def _channel_object(self) -> dict:
        return {
            "id": str(self.channel_id),
            "type": 0,  # GUILD_TEXT
            "guild_id": str(self.guild_id),
            "name": "music",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }

    def _guild_create(self) -> dict:
        everyone = {
            "id": str(self.guild_id),  # the @everyone role's id is the guild's
            "name": "@everyone",
            "permissions": str(_MEMBER_PERMISSIONS),
            "position": 0,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        bot_member = {
            "user": self._bot_user(),
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }
        return {
            "id": str(self.guild_id),
            "name": "Étude test guild",
            "icon": None,
            "owner_id": str(self.owner_id),
            "features": [],
            "roles": [everyone],
            "channels": [self._channel_object()],
            "members": [bot_member],
            "member_count": 2,
            "large": False,
            "unavailable": False,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "voice_states": [],
            "presences": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "emojis": [],
            "stickers": [],
            "preferred_locale": "en-US",
            "premium_tier": 0,
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "application_id": None,
        }

    # ------------------------------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = dict(request.query)
        self._record_ws(f"connect {request.path}?{request.query_string}", path=request.path)
        if query.get("v") != "10":
            await ws.close(code=_CLOSE_INVALID_VERSION, message=b"Invalid API version")
            return ws
        if query.get("encoding", "json") != "json":
            await ws.close(code=_CLOSE_DECODE, message=b"the fake speaks JSON only")
            return ws
        compress = query.get("compress")
        conn = _Connection(ws, compress, request.path)
        if compress == "zlib-stream":
            conn.compressor = _zlib_stream()
        elif compress == "zstd-stream":
            conn.compressor = _zstd_stream()
            if conn.compressor is None:
                await ws.close(code=_CLOSE_DECODE, message=b"no zstd library in this interpreter")
                return ws
        elif compress is not None:
            await ws.close(code=_CLOSE_DECODE, message=b"unknown compression")
            return ws
        self._connections.append(conn)
        session: _Session | None = None
        try:
            await conn.send(
                {"op": _HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None}
            )
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                try:
                    payload = json.loads(msg.data)
                    op, data = payload["op"], payload.get("d")
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=_CLOSE_DECODE, message=b"Error while decoding payload.")
                    break
                if op == _HEARTBEAT:
                    self.heartbeats += 1
                    await conn.send({"op": _HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op in (_IDENTIFY, _RESUME) and session is not None:
                    await ws.close(code=_CLOSE_ALREADY_AUTHENTICATED, message=b"Already authenticated.")
                elif op == _IDENTIFY:
                    session = await self._identify(conn, data or {})
                elif op == _RESUME:
                    session = await self._resume(conn, data or {})
                elif session is None:
                    await ws.close(code=_CLOSE_NOT_AUTHENTICATED, message=b"Not authenticated.")
                elif op in (3, 4, 8, 31):  # presence, voice state, request members, soundboard: accepted
                    self._record_ws(f"<- op {op} (ignored by the fake)", path=conn.path)
                else:
                    await ws.close(code=_CLOSE_UNKNOWN_OPCODE, message=b"Unknown opcode.")
        finally:
            self._connections.remove(conn)
            if session is not None and session.connection is conn:
                session.connection = None
            self._record_ws(f"closed {ws.close_code}", path=conn.path)
        return ws

    async def _identify(self, conn: _Connection, data: dict) -> _Session | None:
        if data.get("token") != self.token:
            self._record_ws("<- IDENTIFY with a wrong token -> close 4004", path=conn.path)
            await conn.ws.close(code=_CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return None
        session = _Session(secrets.token_hex(16), int(data.get("intents", 0)), conn)
        self._sessions[session.session_id] = session
        self._session = session
        self._record_ws(f"<- IDENTIFY intents={session.intents}", path=conn.path)
        ready = {
            "v": 10,
            "user": self._bot_user(),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session.session_id,
            "resume_gateway_url": self.resume_gateway_url,
            "shard": [0, 1],
            "application": {"id": str(self.application_id), "flags": 1 << 23},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
        }
        self._record_ws("-> READY", path=conn.path, seq=await session.dispatch("READY", ready))
        seq = await session.dispatch("GUILD_CREATE", self._guild_create())
        self._record_ws("-> GUILD_CREATE", path=conn.path, seq=seq)
        assert self._ready is not None
        self._ready.set()
        return session

    async def _resume(self, conn: _Connection, data: dict) -> _Session | None:
        session = self._sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token:
            await conn.ws.close(code=_CLOSE_AUTH_FAILED, message=b"Authentication failed.")
            return None
        if session is None:
            self._record_ws("<- RESUME of an unknown session -> INVALID_SESSION", path=conn.path)
            await conn.send({"op": _INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        if session.connection is not None and session.connection is not conn:
            with contextlib.suppress(Exception):
                await session.connection.ws.close(code=4000)
        session.connection = conn
        self._session = session
        since = int(data.get("seq") or 0)
        missed = [p for p in session.history if p["s"] > since]
        self._record_ws(f"<- RESUME seq={since}, replaying {len(missed)}", path=conn.path)
        for payload in missed:
            await conn.send(payload)
        self._record_ws("-> RESUMED", path=conn.path, seq=await session.dispatch("RESUMED", {}))
        return session


# ----------------------------------------------------------------------------------------------- helpers


async def _read_body(request: web.Request) -> tuple[dict, list[_Upload]]:
    """A JSON body, or multipart's payload_json and files[n] parts (as discord.py sends uploads)."""
    if request.content_type == "multipart/form-data":
        payload: dict = {}
        uploads = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())  # type: ignore[union-attr]
            elif part.filename is not None:  # type: ignore[union-attr]
                data = await part.read(decode=False)  # type: ignore[union-attr]
                ctype = part.headers.get("Content-Type")
                uploads.append(_Upload(part.name or "", part.filename, bytes(data), ctype))  # type: ignore[union-attr]
        return payload, uploads
    if not request.can_read_body:
        return {}, []
    try:
        body = await request.json()
    except ValueError:
        raise _form_error("_root", "body is not JSON") from None
    return (body if isinstance(body, dict) else {"_": body}), []


def _kind_for(method: str, path: str) -> str:
    """What a request is, from its route: the log's "kind"."""
    p = path.removeprefix(API_PREFIX)
    if p.startswith("/interactions/"):
        return "callback"
    if p.startswith("/webhooks/"):
        if "/messages/" in p:
            return {"GET": "get", "PATCH": "edit", "DELETE": "delete"}.get(method, "rest")
        return "followup" if method == "POST" else "rest"
    if p.startswith("/channels/") and p.endswith("/messages") and method == "POST":
        return "channel_message"
    if path.startswith(("/attachments/", "/media/")):
        return "cdn"
    if "/commands" in p:
        return "commands"
    return "rest"


def _file_entry(upload: _Upload) -> dict:
    return {
        "field": upload.field,
        "filename": upload.filename,
        "size": len(upload.data),
        "content_type": upload.content_type,
    }


def _guess_type(filename: str) -> str:
    known = {
        ".mid": "audio/midi",
        ".midi": "audio/midi",
        ".wav": "audio/x-wav",
        ".ogg": "audio/ogg",
        ".png": "image/png",
        ".mp4": "video/mp4",
    }
    suffix = filename[filename.rfind(".") :].lower() if "." in filename else ""
    return known.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _bucket(method: str, path: str) -> str:
    return f"{abs(hash((method, path.split('/')[3] if path.count('/') > 3 else path))):016x}"


def _reason(status: int) -> str:
    return {
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Gateway Timeout",
    }.get(status, "Error")


def _short_path(path: str) -> str:
    """Paths with interaction tokens (hundreds of characters) shortened for reading."""
    parts = path.removeprefix(API_PREFIX).split("/")
    return "/".join(p[:10] + "…" if len(p) > 24 else p for p in parts)


def _describe_command(data: dict) -> str:
    args = " ".join(f"{o['name']}:{o.get('value')}" for o in data.get("options", []))
    return f"/{data['name']} {args}".rstrip()


def _describe_message(body: dict) -> str:
    bits = []
    if body.get("content"):
        content = body["content"]
        bits.append(repr(content if len(content) <= 60 else content[:57] + "..."))
    if body.get("flags") and int(body["flags"]) & _EPHEMERAL:
        bits.append("ephemeral")
    if body.get("embeds"):
        bits.append(f"{len(body['embeds'])} embed(s)")
    ids = _custom_ids(body.get("components") or [])
    if ids:
        bits.append("components " + ", ".join(ids))
    return (": " + "; ".join(bits)) if bits else ""


def _walk_components(components: list) -> list[dict]:
    out = []
    for comp in components:
        if not isinstance(comp, dict):
            continue
        out.append(comp)
        out.extend(_walk_components(comp.get("components") or []))
        if isinstance(comp.get("accessory"), dict):
            out.extend(_walk_components([comp["accessory"]]))
    return out


def _find_component(components: list, custom_id: str) -> dict | None:
    return next((c for c in _walk_components(components) if c.get("custom_id") == custom_id), None)


def _custom_ids(components: list) -> list[str]:
    return [c["custom_id"] for c in _walk_components(components) if "custom_id" in c]


def _validate_command(index: int, cmd: Any) -> None:
    """The checks Discord makes on a bulk overwrite that a bot's code can get wrong."""
    if not isinstance(cmd, dict) or not isinstance(cmd.get("name"), str):
        raise _form_error(f"{index}.name", "This field is required")
    name = cmd["name"]
    if not 1 <= len(name) <= 32 or (cmd.get("type", 1) == 1 and name != name.lower()):
        raise _form_error(f"{index}.name", f"Command name {name!r} is invalid")
    if cmd.get("type", 1) == 1 and not 1 <= len(cmd.get("description") or "") <= 100:
        raise _form_error(f"{index}.description", "Must be between 1 and 100 in length.")
    options = cmd.get("options") or []
    if len(options) > 25:
        raise _form_error(f"{index}.options", "Must be 25 or fewer in length.")
    for j, opt in enumerate(options):
        if not 1 <= len(opt.get("description") or "") <= 100:
            raise _form_error(f"{index}.options.{j}.description", "Must be between 1 and 100 in length.")


def _check_option(command: str, spec: dict, value: Any) -> None:
    """Refuse what Discord's client would not let a user send, so a test cannot rely on it."""
    where = f"/{command} {spec['name']}"
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise ValueError(f"{where}: {value!r} is not one of the choices")
    if spec.get("type") in (4, 10) and isinstance(value, int | float):
        if "min_value" in spec and value < spec["min_value"]:
            raise ValueError(f"{where}: {value} is below min_value {spec['min_value']}")
        if "max_value" in spec and value > spec["max_value"]:
            raise ValueError(f"{where}: {value} is above max_value {spec['max_value']}")
    if spec.get("type") == 3 and isinstance(value, str):
        if len(value) < spec.get("min_length", 0) or len(value) > spec.get("max_length", 6000):
            raise ValueError(f"{where}: length {len(value)} is outside the allowed range")
