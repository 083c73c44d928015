"""`/harmonize`: a melody in, a four-part chorale out, through the same queue and delivery as `/compose`.

The job is a `JobSpec` of kind `harmonize` whose seed is the melody file; `ComposeCog`'s `Desk` admits it,
defers, downloads and checks the file, and delivers the result, with the 🔁 re-roll button below, which
carries its options and the stored melody's key in its id (`bot.chat.buttons`), so it keeps working after a restart.
"""

from __future__ import annotations

import asyncio

import discord
from discord import app_commands
from discord.ext import commands

from bot.chat.buttons import EtudeButton, Press, button_id
from bot.chat.commands import ComposeCog
from bot.chat.desk import REPLY_VIEWS, SEED_CHECKS
from bot.chat.params import (
    INSTRUMENT_CHOICES,
    KEY_CHOICES,
    PERFORMANCE_CHOICES,
    RngSeed,
    Temperature,
    Tempo,
    check_attachment,
    describe,
    slash_options,
)
from bot.errors import BadSeed
from bot.music.melody import MAX_MELODY_NOTES, read_melody
from bot.options import INSTRUMENT_HELP, MAX_LENGTH, MELODY_HELP, PERFORMANCE_HELP, SPECS, Options

KIND = "harmonize"


def harmony_view(options: Options, melody_key: str | None) -> discord.ui.View:
    """🔁 re-roll under a chorale: the same melody and options, a new RNG seed."""
    view = discord.ui.View(timeout=None)
    if melody_key:
        view.add_item(EtudeButton(button_id(KIND, options, melody_key)))
    return view


def check_melody(data: bytes, name: str, limits) -> None:
    """The quick check before the queue: the bounded reader and the melody's own limits."""
    read_melody(data, name, limits)


class HarmonizeCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.settings = bot.settings

    @property
    def compose(self) -> ComposeCog:
        cog = self.bot.get_cog("ComposeCog")
        assert cog is not None, "HarmonizeCog goes through ComposeCog's queue and delivery"
        return cog

    @app_commands.command(name="harmonize")
    @app_commands.describe(
        melody=f"{MELODY_HELP} (up to {MAX_MELODY_NOTES} notes)"[:100],
        key="The key to write in; without it, the melody's own",
        temperature=describe("temperature"),
        tempo=describe("tempo"),
        instrument=INSTRUMENT_HELP,
        rng_seed=SPECS["rng_seed"].help,
        performance=PERFORMANCE_HELP,
    )
    @app_commands.choices(instrument=INSTRUMENT_CHOICES, key=KEY_CHOICES, performance=PERFORMANCE_CHOICES)
    async def harmonize(
        self,
        interaction: discord.Interaction,
        melody: discord.Attachment,
        key: app_commands.Choice[str] | None = None,
        temperature: Temperature | None = None,
        tempo: Tempo | None = None,
        instrument: app_commands.Choice[int] | None = None,
        rng_seed: RngSeed | None = None,
        performance: app_commands.Choice[str] | None = None,
    ) -> None:
        """Harmonize a melody you attach as a four-part chorale."""
        options = slash_options(
            MAX_LENGTH,  # a chorale's length is its melody's: an operator's cap on /compose is not for it
            temperature=temperature,
            tempo=tempo,
            instrument=instrument,
            rng_seed=rng_seed,
            key=key,
            performance=performance,
        )
        check_attachment(melody, "melody", self.settings.seed_max_bytes, missing="attach a melody")
        await self.compose.desk.start(interaction, options, seed_attachment=melody, kind=KIND)

    async def reroll(self, interaction: discord.Interaction, press: Press) -> None:
        data = await asyncio.to_thread(self.compose.desk.seeds.get, press.file_key)
        if data is None:
            raise BadSeed("the melody of this chorale is no longer kept; use /harmonize with it again")
        await self.compose.desk.start(
            interaction, press.options, seed_bytes=data, seed_name="melody", kind=KIND
        )


async def setup(bot) -> None:
    """Register the command, its check and its reply's buttons; called from the bot's `setup_hook`."""
    SEED_CHECKS[KIND] = check_melody
    REPLY_VIEWS[KIND] = harmony_view
    await bot.add_cog(HarmonizeCog(bot))
