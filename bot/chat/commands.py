"""`/compose`, `/status`, `/help` and what the re-roll / continue buttons do when pressed.

The cog checks what the user asked for and hands the job to its `Desk`, which runs and answers it.
"""

from __future__ import annotations

import asyncio
import logging
import re

import discord
from discord import app_commands
from discord.ext import commands

from bot.cards import DEFAULT_MODEL, load_card
from bot.chat.buttons import options_from_id
from bot.chat.desk import Desk
from bot.chat.params import (
    INSTRUMENT_CHOICES,
    KEY_CHOICES,
    PERFORMANCE_CHOICES,
    SEED_SUFFIXES,
    Length,
    RngSeed,
    Temperature,
    Tempo,
    TopP,
    describe,
)
from bot.chat.reply import help_embed
from bot.errors import EtudeError, reference, went_wrong
from bot.options import (
    INSTRUMENT_HELP,
    KEY_HELP,
    PERFORMANCE_HELP,
    PERFORMANCES,
    SEED_HELP,
    SPECS,
    VIDEO_HELP,
    Options,
)

log = logging.getLogger(__name__)

BUTTON_GONE = "this button no longer works; use /compose instead"


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
        video=VIDEO_HELP,
        performance=PERFORMANCE_HELP,
    )
    @app_commands.choices(instrument=INSTRUMENT_CHOICES, key=KEY_CHOICES, performance=PERFORMANCE_CHOICES)
    async def compose(
        self,
        interaction: discord.Interaction,
        length: Length = SPECS["length"].default,
        seed: discord.Attachment | None = None,
        temperature: Temperature = SPECS["temperature"].default,
        top_p: TopP = SPECS["top_p"].default,
        instrument: app_commands.Choice[int] | None = None,
        tempo: Tempo | None = None,
        rng_seed: RngSeed | None = None,
        key: app_commands.Choice[str] | None = None,
        video: bool = False,
        performance: app_commands.Choice[str] | None = None,
    ) -> None:
        """Compose a piece of music, optionally continuing a MIDI file you attach."""
        if seed is not None:
            # The declared name and size are checked before anything is downloaded.
            if not seed.filename.lower().endswith(SEED_SUFFIXES):
                await self.desk.refuse(interaction, "the seed must be a MIDI file (.mid or .midi)")
                return
            if seed.size > self.settings.seed_max_bytes:
                await self.desk.refuse(
                    interaction, f"the seed is larger than {self.settings.seed_max_bytes // 1024} KiB"
                )
                return
        options = Options(
            length=length,
            temperature=float(temperature),
            top_p=float(top_p),
            tempo=tempo,
            instrument=instrument.value if instrument else 0,
            rng_seed=rng_seed,
            key=key.value if key else None,
            video=video,
            performance=performance.value if performance else PERFORMANCES[0],
        ).check(self.settings.max_length)
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
        card = runtime.worker.composer.model.card if runtime.worker and runtime.worker.composer else {}
        if not card:
            card = load_card(self.settings.model_dir or DEFAULT_MODEL)
        await interaction.response.send_message(
            embed=help_embed(card, self.settings.max_length, self.settings.seed_max_bytes), ephemeral=True
        )

    # -- buttons ------------------------------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, match: re.Match) -> None:
        try:  # a button made under other limits (an operator lowered MAX_LENGTH since) is answered, not run
            options, seed_key = options_from_id(match)
            options = options.check(self.settings.max_length)
        except (EtudeError, ValueError, TypeError):
            await self.desk.refuse(interaction, BUTTON_GONE)
            return
        if match["action"] == "reroll":
            seed_bytes = None
            if seed_key:
                seed_bytes = await asyncio.to_thread(self.desk.seeds.get, seed_key)
                if seed_bytes is None:
                    await self.desk.refuse(
                        interaction, "the seed of this piece is no longer kept; use /compose with it again"
                    )
                    return
            await self.desk.start(
                interaction,
                options,
                seed_bytes=seed_bytes,
                seed_name="seed",
                kind="reroll",
            )
            return
        # Continue: the piece's own .mid, attached to the message the button sits on, seeds the next part.
        midi = next(
            (
                a
                for a in (interaction.message.attachments if interaction.message else [])
                if a.filename.lower().endswith(SEED_SUFFIXES)
            ),
            None,
        )
        if midi is None or midi.size > self.settings.seed_max_bytes:
            await self.desk.refuse(interaction, "this message has no MIDI file to continue")
            return
        await self.desk.start(interaction, options, seed_attachment=midi, kind="continue")

    # -- loading, unloading, errors -----------------------------------------------------------------------------
    async def cog_load(self) -> None:
        self.desk.start_recovery()

    async def cog_unload(self) -> None:
        await self.desk.stop_waiting()

    async def cog_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ):
        original = getattr(error, "original", error)
        if isinstance(original, EtudeError):
            message = str(original)
        else:
            ref = reference()
            log.error("command failed (ref %s)", ref, exc_info=original)
            message = went_wrong(ref)
        try:
            await self.desk.refuse(interaction, message)
        except discord.HTTPException:
            log.warning("could not tell the user about an error")
