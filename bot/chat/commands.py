"""`/compose`, `/status`, `/help` and what the re-roll / continue buttons do when pressed.

The cog checks what the user asked for and hands the job to its `Desk`, which runs and answers it.
"""

from __future__ import annotations

import asyncio
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.cards import DEFAULT_MODEL, load_card
from bot.chat.buttons import Press
from bot.chat.desk import Desk
from bot.chat.params import (
    INSTRUMENT_CHOICES,
    KEY_CHOICES,
    PERFORMANCE_CHOICES,
    SEED_SUFFIXES,
    STYLE_CHOICES,
    Length,
    RngSeed,
    Temperature,
    Tempo,
    TopP,
    check_attachment,
    describe,
    slash_options,
)
from bot.chat.reply import help_embed
from bot.errors import BadOption, BadSeed
from bot.options import (
    INSTRUMENT_HELP,
    KEY_HELP,
    PERFORMANCE_HELP,
    SEED_HELP,
    SPECS,
    STYLE_HELP,
    VIDEO_HELP,
)

log = logging.getLogger(__name__)


class ComposeCog(commands.Cog):
    def __init__(self, bot):
        self.bot = bot
        self.settings = bot.settings
        self.desk = Desk(bot)

    # -- commands ----------------------------------------------------------------------------------------------
    @app_commands.command(name="compose")
    @app_commands.describe(
        length=describe("length"),
        seed=SEED_HELP,
        temperature=describe("temperature"),
        top_p=describe("top_p"),
        instrument=INSTRUMENT_HELP,
        tempo=describe("tempo"),
        rng_seed=SPECS["rng_seed"].help,
        key=KEY_HELP[:100],
        style=STYLE_HELP[:100],
        video=VIDEO_HELP,
        performance=PERFORMANCE_HELP,
    )
    @app_commands.choices(
        instrument=INSTRUMENT_CHOICES, key=KEY_CHOICES, style=STYLE_CHOICES, performance=PERFORMANCE_CHOICES
    )
    async def compose(
        self,
        interaction: discord.Interaction,
        length: Length = SPECS["length"].default,
        seed: discord.Attachment | None = None,
        temperature: Temperature | None = None,
        top_p: TopP = SPECS["top_p"].default,
        instrument: app_commands.Choice[int] | None = None,
        tempo: Tempo | None = None,
        rng_seed: RngSeed | None = None,
        key: app_commands.Choice[str] | None = None,
        style: app_commands.Choice[str] | None = None,
        video: bool = False,
        performance: app_commands.Choice[str] | None = None,
    ) -> None:
        """Compose a piece of music, optionally continuing a MIDI file you attach."""
        options = slash_options(
            self.settings.max_length,
            length=length,
            temperature=temperature,
            top_p=top_p,
            tempo=tempo,
            instrument=instrument,
            rng_seed=rng_seed,
            key=key,
            style=style,
            video=video,
            performance=performance,
        )
        check_attachment(seed, "seed", self.settings.seed_max_bytes)
        await self.desk.start(interaction, options, seed_attachment=seed, kind="compose")

    @app_commands.command(name="status")
    async def status(self, interaction: discord.Interaction) -> None:
        """How busy Étude is: pieces in the queue, workers online, the recent wait."""
        queued, workers = await self.bot.runtime.status()
        wait = self.desk.scheduler.median_wait()
        lines = [
            f"**Queue:** {queued} piece{'s' if queued != 1 else ''} waiting or composing",
            f"**Workers online:** {workers}",
            f"**Recent median wait:** {f'{wait:.1f} s' if wait is not None else 'no pieces yet'}",
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="help")
    async def help(self, interaction: discord.Interaction) -> None:
        """What Étude does, its options and limits, and the model behind it."""
        runtime = self.bot.runtime
        card = runtime.worker.card if runtime.worker else {}
        if not card:
            card = load_card(self.settings.model_dir or DEFAULT_MODEL)
        await interaction.response.send_message(
            embed=help_embed(card, self.settings.max_length, self.settings.seed_max_bytes), ephemeral=True
        )

    # -- buttons ------------------------------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, press: Press) -> None:
        """🔁 re-roll (the same seed and options, a new RNG seed) or ➕ continue (the piece's own .mid)."""
        try:  # a button made under other limits (an operator lowered MAX_LENGTH since) is answered, not run
            options = press.options.check(self.settings.max_length)
        except BadOption as e:
            raise BadOption(f"this button no longer works: {e}") from None
        if press.action == "reroll":
            seed_bytes = None
            if press.file_key:
                seed_bytes = await asyncio.to_thread(self.desk.seeds.get, press.file_key)
                if seed_bytes is None:
                    raise BadSeed("the seed of this piece is no longer kept; use /compose with it again")
            await self.desk.start(
                interaction, options, seed_bytes=seed_bytes, seed_name="seed", kind="reroll"
            )
            return
        # Continue: the piece's own .mid, attached to the message the button sits on, seeds the next part.
        attached = interaction.message.attachments if interaction.message else []
        midi = next((a for a in attached if a.filename.lower().endswith(SEED_SUFFIXES)), None)
        check_attachment(
            midi,
            "piece's MIDI file",
            self.settings.seed_max_bytes,
            missing="this message has no MIDI file to continue",
        )
        await self.desk.start(interaction, options, seed_attachment=midi, kind="continue")

    # -- loading, unloading, errors -----------------------------------------------------------------------------
    async def cog_load(self) -> None:
        self.desk.start_recovery()

    async def cog_unload(self) -> None:
        await self.desk.stop_waiting()
