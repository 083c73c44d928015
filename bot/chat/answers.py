"""The one place an error meets the user: every command's and every button's failure is answered here,
privately and in one line. A user's mistake (an `EtudeError`, a value Discord should not have sent) is
logged in one line; anything else is a fault, logged with its traceback under a reference the user sees."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.errors import EtudeError, reference, went_wrong

log = logging.getLogger(__name__)


def sentence(message: str | None) -> str:
    """An error message as the user reads it: starting with a capital."""
    message = message or "something went wrong"
    return message[0].upper() + message[1:]


def user_message(error: BaseException) -> str | None:
    """What to tell the user about a mistake of theirs; None when the error is a fault of Étude's."""
    original = getattr(error, "original", None) or error
    if isinstance(original, EtudeError):
        return str(original)
    if isinstance(original, app_commands.TransformerError):
        shown = str(original.value)[:40]
        return f"{shown!r} is not one of this option's choices: pick one from the list"
    if isinstance(original, app_commands.CommandSignatureMismatch | app_commands.CommandNotFound):
        return "this command has just changed; please run it again"
    return None


async def say_privately(interaction: discord.Interaction, message: str) -> None:
    """Answer `interaction` with `message`, seen only by the user who asked."""
    text = sentence(message)
    if interaction.response.is_done():
        await interaction.followup.send(text, ephemeral=True)
    else:
        await interaction.response.send_message(text, ephemeral=True)


async def answer_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Tell the user what went wrong: their mistake as it is, a fault as a reference to the log."""
    message = user_message(error)
    if message is not None:
        log.info("refused %s: %s", _what(interaction), message)
    else:
        ref = reference()
        original = getattr(error, "original", None) or error
        log.error("%s failed (ref %s)", _what(interaction), ref, exc_info=original)
        message = went_wrong(ref)
    try:
        await say_privately(interaction, message)
    except discord.HTTPException as e:
        log.warning("could not tell the user about an error: %s", e)


def _what(interaction: discord.Interaction) -> str:
    if interaction.command is not None:
        return f"/{interaction.command.qualified_name}"
    return f"button {str((interaction.data or {}).get('custom_id', '?'))[:100]!r}"
