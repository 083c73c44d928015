"""The buttons under a reply. A `CogButton`'s custom id carries all its state, so it still works after the
bot restarts, and pressing it hands the parsed id to a cog; a composition's 🔁 and ➕ are `PieceButton`s."""

from __future__ import annotations

import re
from typing import ClassVar

import discord

from bot.options import KEYS, Options

CUSTOM_ID = re.compile(
    r"etude:(?P<action>reroll|continue):(?P<length>\d+):(?P<temperature>[0-9.]+):(?P<top_p>[0-9.]+):"
    r"(?P<tempo>\d+):(?P<instrument>\d+):(?P<seed>[0-9a-f]{16}|-)(?::k(?P<key>\d{1,2}))?"
)


def button_id(action: str, options: Options, seed_key: str | None) -> str:
    """A custom id that carries everything a button needs, so it works after a restart."""
    return (
        f"etude:{action}:{options.length}:{options.temperature:g}:{options.top_p:g}:{int(options.tempo or 0)}:"
        f"{options.instrument}:{seed_key or '-'}" + (f":k{KEYS.index(options.key)}" if options.key else "")
    )


def options_from_id(match: re.Match) -> tuple[Options, str | None]:
    tempo = int(match["tempo"])
    opts = Options(
        length=int(match["length"]),
        temperature=float(match["temperature"]),
        top_p=float(match["top_p"]),
        tempo=tempo or None,
        instrument=int(match["instrument"]),
        key=KEYS[int(match["key"])] if match["key"] and int(match["key"]) < len(KEYS) else None,
    )
    return opts, None if match["seed"] == "-" else match["seed"]


class CogButton(discord.ui.DynamicItem[discord.ui.Button], template=r"etude:.+"):
    """A button whose custom id (the subclass's `template`) carries everything it needs, so it outlives the
    bot: pressed, it hands the id's match to the method `handler` of the cog named `cog`."""

    cog: ClassVar[str]
    handler: ClassVar[str]

    def __init__(self, custom_id: str):
        match = self.template.fullmatch(custom_id)
        assert match is not None
        label, emoji = self.face(match)
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=discord.ButtonStyle.secondary, custom_id=custom_id
            )
        )
        self.match = match

    def face(self, match: re.Match) -> tuple[str, str]:
        """The label and emoji of the button with this id."""
        raise NotImplementedError

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match):
        return cls(item.custom_id)

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = interaction.client.get_cog(self.cog)  # type: ignore[union-attr]
        if cog is not None:
            await getattr(cog, self.handler)(interaction, self.match)


class PieceButton(CogButton, template=CUSTOM_ID.pattern):
    """🔁 re-roll and ➕ continue under a composition."""

    cog, handler = "ComposeCog", "on_button"

    def face(self, match: re.Match) -> tuple[str, str]:
        return ("re-roll", "🔁") if match["action"] == "reroll" else ("continue", "➕")


def piece_view(options: Options, seed_key: str | None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(PieceButton(button_id("reroll", options, seed_key)))
    view.add_item(PieceButton(button_id("continue", options, None)))
    return view
