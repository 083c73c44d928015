"""The buttons under a reply. A button's custom id carries all its state (the action, the options through
`bot.codec`, and the key of a stored seed or melody), so it still works after the bot restarts.

One `EtudeButton` answers every custom id that starts with `etude:`: it parses and checks the id when the
button is pressed and hands the result to the cog that runs the action; an id that does not parse (forged,
from an older bot, or out of today's limits) is answered privately in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

from bot import codec
from bot.errors import BadOption, EtudeError
from bot.options import Options

PREFIX = "etude:"
ID_MAX = 100  # Discord's limit on a custom id
FILE_KEY = re.compile(r"[0-9a-f]{16}")  # a stored seed's or melody's key (`SeedStore`)
GONE = "this button no longer works"
# action -> (cog, its method, its label, its emoji)
ACTIONS: dict[str, tuple[str, str, str, str]] = {
    "reroll": ("ComposeCog", "on_button", "re-roll", "🔁"),
    "continue": ("ComposeCog", "on_button", "continue", "➕"),
    "harmonize": ("HarmonizeCog", "reroll", "re-roll", "🔁"),
}


@dataclass(frozen=True)
class Press:
    """What a pressed button asks for: its action, its options (not yet held to today's limits) and the key
    of the stored file it works on, if any."""

    action: str
    options: Options
    file_key: str | None


def button_id(action: str, options: Options, file_key: str | None = None) -> str:
    """The custom id of a button that does `action` with `options` (and the stored file `file_key`)."""
    parts = [PREFIX + action, *codec.encode(options)]
    if file_key:
        parts.append("s" + file_key)
    cid = ":".join(parts)
    assert len(cid) <= ID_MAX, cid  # every option at its longest fits: tests/test_codec.py
    return cid


def _legacy(action: str, parts: list[str]) -> list[str]:
    """The tagged parts of an id written before the codec: numbers in a fixed order, a file key or `-`, and
    maybe `k<index>`."""
    names = ("t", "b", "i") if action == "harmonize" else ("l", "t", "p", "b", "i")
    if len(parts) not in (len(names) + 1, len(names) + 2):
        raise BadOption(GONE)
    tagged = [tag + text for tag, text in zip(names, parts) if not (tag == "b" and text == "0")]
    file_key = parts[len(names)]
    if file_key != "-":
        tagged.append("s" + file_key)
    return tagged + parts[len(names) + 1 :]


def parse(custom_id: str) -> Press:
    """The press a custom id asks for; `BadOption` with a one-line reason when it asks for nothing valid."""
    if not custom_id.startswith(PREFIX) or len(custom_id) > ID_MAX:
        raise BadOption(GONE)
    action, *parts = custom_id[len(PREFIX) :].split(":")
    if action not in ACTIONS:
        raise BadOption(GONE)
    if parts and parts[0][:1].isdigit():
        parts = _legacy(action, parts)
    keys = [p[1:] for p in parts if p.startswith("s")]
    if len(keys) > 1 or not all(FILE_KEY.fullmatch(k) for k in keys):
        raise BadOption(GONE)
    file_key = keys[0] if keys else None
    parts = [p for p in parts if not p.startswith("s")]
    if action == "harmonize" and file_key is None:
        raise BadOption(GONE)
    try:
        options = codec.decode(parts)
    except BadOption as e:
        raise BadOption(f"{GONE}: {e}") from None
    return Press(action, options, file_key)


class EtudeButton(discord.ui.DynamicItem[discord.ui.Button], template=r"etude:.*"):
    """Every button Étude posts. Pressed, it parses its id and hands the `Press` to its action's cog."""

    def __init__(self, custom_id: str):
        try:
            self.press: Press | None = parse(custom_id)
            self.problem = ""
            _, _, label, emoji = ACTIONS[self.press.action]
        except EtudeError as e:
            self.press, self.problem = None, str(e)
            label, emoji = "…", "❔"
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=discord.ButtonStyle.secondary, custom_id=custom_id
            )
        )

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match):
        return cls(item.custom_id or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        from bot.chat.answers import answer_error

        try:
            if self.press is None:
                raise BadOption(self.problem)
            cog_name, method, *_ = ACTIONS[self.press.action]
            cog = interaction.client.get_cog(cog_name)  # type: ignore[union-attr]
            if cog is None:
                raise BadOption(GONE)
            await getattr(cog, method)(interaction, self.press)
        except Exception as e:  # discord.py would only log it: the user is answered here, always
            await answer_error(interaction, e)


def piece_view(options: Options, seed_key: str | None) -> discord.ui.View:
    """🔁 re-roll (the same seed, a new RNG seed) and ➕ continue (the piece's own .mid) under a piece."""
    view = discord.ui.View(timeout=None)
    view.add_item(EtudeButton(button_id("reroll", options, seed_key)))
    view.add_item(EtudeButton(button_id("continue", options)))
    return view
