"""`/harmonize`: a melody in, a four-part chorale out, through the same queue and delivery as `/compose`.

The job is a `JobSpec` of kind `harmonize` whose seed is the melody file; `ComposeCog`'s `Desk` admits it,
defers, downloads and checks the file, and delivers the result, with the 🔁 re-roll button below, which
carries its options and the stored melody's key in its id, so it keeps working after a restart.
"""

from __future__ import annotations

import asyncio
import re

import discord
from discord import app_commands
from discord.ext import commands

from bot.chat.buttons import CogButton
from bot.chat.commands import ComposeCog
from bot.chat.desk import REPLY_VIEWS, SEED_CHECKS
from bot.chat.params import (
    INSTRUMENT_CHOICES,
    KEY_CHOICES,
    PERFORMANCE_CHOICES,
    SEED_SUFFIXES,
    RngSeed,
    Temperature,
    Tempo,
    describe,
)
from bot.music.melody import MAX_MELODY_NOTES, read_melody
from bot.options import (
    INSTRUMENT_HELP,
    KEYS,
    MELODY_HELP,
    PERFORMANCE_HELP,
    PERFORMANCES,
    SPECS,
    Options,
)

KIND = "harmonize"
HARMONIZE_ID = re.compile(
    r"etude:harmonize:(?P<temperature>[0-9.]+):(?P<tempo>\d+):(?P<instrument>\d+):(?P<melody>[0-9a-f]{16})"
    r"(?::k(?P<key>\d{1,2}))?"
)


def harmonize_id(options: Options, melody_key: str) -> str:
    """A custom id that carries the options (the key as its index in KEYS) and the stored melody's key."""
    key = f":k{KEYS.index(options.key)}" if options.key else ""
    return (
        f"etude:harmonize:{options.temperature:g}:{int(options.tempo or 0)}:{options.instrument}:{melody_key}"
        + key
    )


def options_from_match(match: re.Match) -> tuple[Options, str]:
    tempo = int(match["tempo"])
    key = KEYS[int(match["key"])] if match["key"] and int(match["key"]) < len(KEYS) else None
    options = Options(
        temperature=float(match["temperature"]),
        tempo=tempo or None,
        instrument=int(match["instrument"]),
        key=key,
    )
    return options, match["melody"]


class RerollHarmony(CogButton, template=HARMONIZE_ID.pattern):
    """🔁 re-roll under a chorale: the same melody and options, a new RNG seed."""

    cog, handler = "HarmonizeCog", "reroll"

    def face(self, match: re.Match) -> tuple[str, str]:
        return "re-roll", "🔁"


def harmony_view(options: Options, melody_key: str | None) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if melody_key:
        view.add_item(RerollHarmony(harmonize_id(options, melody_key)))
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
        temperature: Temperature = SPECS["temperature"].default,
        tempo: Tempo | None = None,
        instrument: app_commands.Choice[int] | None = None,
        rng_seed: RngSeed | None = None,
        performance: app_commands.Choice[str] | None = None,
    ) -> None:
        """Harmonize a melody you attach as a four-part chorale."""
        # The declared name and size are checked before anything is downloaded.
        if not melody.filename.lower().endswith(SEED_SUFFIXES):
            await self.compose.desk.refuse(interaction, "the melody must be a MIDI file (.mid or .midi)")
            return
        if melody.size > self.settings.seed_max_bytes:
            await self.compose.desk.refuse(
                interaction, f"the melody file is larger than {self.settings.seed_max_bytes // 1024} KiB"
            )
            return
        options = Options(
            temperature=float(temperature),
            tempo=tempo,
            instrument=instrument.value if instrument else 0,
            rng_seed=rng_seed,
            key=key.value if key else None,
            performance=performance.value if performance else PERFORMANCES[0],
        ).check()
        await self.compose.desk.start(interaction, options, seed_attachment=melody, kind=KIND)

    async def reroll(self, interaction: discord.Interaction, match: re.Match) -> None:
        options, key = options_from_match(match)
        data = await asyncio.to_thread(self.compose.desk.seeds.get, key)
        if data is None:
            await self.compose.desk.refuse(
                interaction, "the melody of this chorale is no longer kept; use /harmonize with it again"
            )
            return
        await self.compose.desk.start(
            interaction, options.check(), seed_bytes=data, seed_name="melody", kind=KIND
        )

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await self.compose.cog_app_command_error(interaction, error)


async def setup(bot) -> None:
    """Register the command, its check and its reply's buttons; called from the bot's `setup_hook`."""
    SEED_CHECKS[KIND] = check_melody
    REPLY_VIEWS[KIND] = harmony_view
    await bot.add_cog(HarmonizeCog(bot))
    bot.add_dynamic_items(RerollHarmony)
