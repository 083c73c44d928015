"""A finished job's way to the user: the interaction's follow-up while its token lives, else the channel.

A finished piece is kept until Discord has taken it: server errors (5xx) and rate limits (429) are retried
with exponential backoff for as long as the interaction's token lives, then in the channel for
`keep_seconds` more. Every text that comes from a user (a seed's file name above all) is cut to Discord's
limits first, so Discord never refuses a message for its size. Failures are answered privately while the
token lives; every "something went wrong" carries the job's reference (`bot.errors.reference`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable

import discord

from bot.chat.answers import sentence
from bot.chat.reply import result_embed
from bot.errors import reference, went_wrong
from bot.queue.jobs import JobResult, JobSpec

log = logging.getLogger(__name__)

FOLLOWUP_WINDOW = 15 * 60 - 30  # seconds: Discord's interaction tokens last 15 minutes; keep a margin
# Discord's limits on what a message may hold (https://discord.com/developers/docs/resources/message).
CONTENT_MAX = 2000
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELD_VALUE_MAX = 1024
EMBED_FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
FILENAME_MAX = 100  # Discord takes longer names, but clients cut them; ours stay readable
TOKEN_GONE = (10015, 50027)  # Unknown Webhook, Invalid Webhook Token: the 15 minutes are over


def bound(text: str | None, limit: int) -> str:
    """`text` cut to `limit` characters, with an ellipsis where it was cut."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bound_filename(name: str, limit: int = FILENAME_MAX) -> str:
    """A file name cut to `limit` characters, its extension kept."""
    if len(name) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 8:
        return name[:limit]
    return stem[: limit - len(suffix) - 1] + "." + suffix


def bound_embed(embed: discord.Embed) -> discord.Embed:
    """The embed cut to Discord's limits, field by field and then in total."""
    if embed.title:
        embed.title = bound(embed.title, EMBED_TITLE_MAX)
    if embed.description:
        embed.description = bound(embed.description, EMBED_DESCRIPTION_MAX)
    for i, field in enumerate(embed.fields):
        embed.set_field_at(
            i,
            name=bound(field.name, 256),
            value=bound(field.value, EMBED_FIELD_VALUE_MAX),
            inline=field.inline,
        )
    if embed.footer and embed.footer.text:
        embed.set_footer(text=bound(embed.footer.text, EMBED_FOOTER_MAX))
    excess = len(embed) - EMBED_TOTAL_MAX
    if excess > 0 and embed.description:
        embed.description = bound(embed.description, max(len(embed.description) - excess, 1))
    return embed


def retryable(e: Exception) -> bool:
    """A failure that may pass if tried again: Discord's server errors and rate limits, or no connection."""
    if isinstance(e, discord.HTTPException):
        return e.status >= 500 or e.status == 429
    return isinstance(e, OSError | asyncio.TimeoutError)


def token_gone(e: Exception) -> bool:
    return isinstance(e, discord.NotFound) or (isinstance(e, discord.HTTPException) and e.code in TOKEN_GONE)


class Delivery:
    """Answers users for the bot; `deliver()` returns where the answer went: followup, channel or nowhere."""

    def __init__(
        self,
        client: discord.Client,
        *,
        window: float = FOLLOWUP_WINDOW,
        keep_seconds: float = 3600.0,
        backoff: float = 1.0,
        backoff_cap: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.client = client
        self.window, self.keep_seconds = window, keep_seconds
        self.backoff, self.backoff_cap = backoff, backoff_cap
        self.clock, self.sleep = clock, sleep

    # -- entry points ----------------------------------------------------------------------------------------
    async def deliver(
        self,
        spec: JobSpec,
        result: JobResult,
        view: discord.ui.View | None = None,
        webhook: discord.Webhook | None = None,
        *,
        plain: bool = False,
    ) -> str:
        """Send the piece (or the error) to the user who asked; see the module's docstring. `plain` sends
        the files with one line instead of the embed (what is left when the embed could not be made)."""
        webhook = webhook or self.webhook(spec)
        token_deadline = spec.interaction_created + self.window
        mention = f"<@{spec.user_id}>"
        if not result.ok:
            text = sentence(result.error or went_wrong(reference(spec.job_id)))
            if webhook is not None and await self._try(
                lambda: self._private(webhook, text), token_deadline, spec.job_id
            ):
                return "followup"
            return await self._channel(spec, lambda: {"content": bound(f"{mention} {text}", CONTENT_MAX)})

        embed = None if plain else self._embed(spec, result, mention)

        def message() -> dict:  # made afresh for every attempt: a sent discord.File is spent
            files = [discord.File(io.BytesIO(f.data), filename=bound_filename(f.name)) for f in result.files]
            if embed is None:
                name = bound(result.info.get("name") or "your piece", 200)
                return {"content": f"{mention} {name}", "files": files, "view": view or discord.utils.MISSING}
            return {"embed": embed, "files": files, "view": view or discord.utils.MISSING}

        if webhook is not None and await self._try(
            lambda: webhook.send(**message()), token_deadline, spec.job_id
        ):
            return "followup"
        return await self._channel(spec, lambda: {"content": f"{mention} your piece is ready.", **message()})

    @staticmethod
    def _embed(spec: JobSpec, result: JobResult, mention: str) -> discord.Embed | None:
        """The reply's embed; None (logged with the job's reference) when it cannot be made."""
        try:
            return bound_embed(result_embed(result, mention))
        except Exception:
            log.exception("job %s: no embed for the piece (ref %s)", spec.job_id, reference(spec.job_id))
            return None

    async def done(self, spec: JobSpec, result: JobResult, webhook: discord.Webhook | None = None) -> None:
        """The deferred message says the piece is out (a courtesy, after the piece itself)."""
        webhook = webhook or self.webhook(spec)
        if webhook is not None:
            await self.edit_original(webhook, f"✅ Done: {bound(result.info.get('name'), 200)}")

    def webhook(self, spec: JobSpec) -> discord.Webhook | None:
        """The interaction's webhook, rebuilt from the job (a restarted bot has no interaction object)."""
        if spec.application_id and spec.interaction_token:
            return discord.Webhook.partial(spec.application_id, spec.interaction_token, client=self.client)
        return None

    async def edit_original(self, webhook: discord.Webhook, content: str) -> None:
        try:
            await webhook.edit_message("@original", content=bound(content, CONTENT_MAX))
        except (discord.HTTPException, ValueError) as e:  # a courtesy; the piece is out
            log.debug("final edit failed: %s", e)

    # -- the two ways ----------------------------------------------------------------------------------------
    async def _private(self, webhook: discord.Webhook, text: str) -> None:
        try:
            await webhook.delete_message("@original")
        except (discord.HTTPException, ValueError):
            pass
        await webhook.send(bound(text, CONTENT_MAX), ephemeral=True)

    async def _channel(self, spec: JobSpec, message: Callable[[], dict]) -> str:
        if spec.channel_id is None:
            log.error("job %s has no channel to post in; it is not delivered", spec.job_id)
            return "nowhere"

        async def post() -> None:
            channel = self.client.get_channel(spec.channel_id) or await self.client.fetch_channel(
                spec.channel_id
            )
            await channel.send(allowed_mentions=discord.AllowedMentions(users=True), **message())

        if await self._try(post, self.clock() + self.keep_seconds, spec.job_id):
            return "channel"
        log.error("job %s could not be delivered: Discord refused it until the end", spec.job_id)
        return "nowhere"

    async def _try(self, send: Callable[[], Awaitable[object]], deadline: float, job_id: str) -> bool:
        """Call `send()` until it works (True), or fails for good, or `deadline` passes (False)."""
        attempt = 0
        while self.clock() < deadline:
            try:
                await send()
                return True
            except Exception as e:
                if token_gone(e):
                    log.info("job %s: the interaction expired; posting in the channel", job_id)
                    return False
                if not retryable(e):
                    log.error("job %s: Discord refused the answer: %s", job_id, e)
                    return False
                pause = min(self.backoff * 2**attempt, self.backoff_cap, max(deadline - self.clock(), 0))
                attempt += 1
                log.warning(
                    "job %s: delivery attempt %d failed (%s); again in %.1f s", job_id, attempt, e, pause
                )
                await self.sleep(pause)
        return False
