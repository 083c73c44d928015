"""How the options of `bot.options` appear as slash-command parameters: ranges Discord enforces in the
client, descriptions within its 100 characters, the choices of instrument, key, style and performance, and the one check of
an attached file's name and declared size before anything is downloaded."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.errors import BadSeed
from bot.options import INSTRUMENTS, KEYS, PERFORMANCES, SPECS, STYLES, Options

SEED_SUFFIXES = (".mid", ".midi")  # what an attached seed or melody may be called
INSTRUMENT_CHOICES = [app_commands.Choice(name=name, value=program) for name, program in INSTRUMENTS.items()]
KEY_CHOICES = [app_commands.Choice(name=name, value=name) for name in KEYS]  # 24: Discord allows 25
STYLE_CHOICES = [app_commands.Choice(name=name, value=name) for name in STYLES]
PERFORMANCE_CHOICES = [app_commands.Choice(name=name, value=name) for name in PERFORMANCES]


def _range(name: str):
    """The option's range from `bot.options`, for Discord to enforce in the client."""
    spec = SPECS[name]
    return app_commands.Range[spec.kind, spec.lo, spec.hi]


def describe(name: str) -> str:
    """The option's help and range, as a parameter's description."""
    spec = SPECS[name]
    return f"{spec.help} ({spec.range_text()})"[:100]


def slash_options(max_length: int, **values) -> Options:
    """Checked options from a slash command's parameters (a choice arrives as its `Choice`); the options a
    command does not have keep their defaults."""
    plain = {k: v.value if isinstance(v, app_commands.Choice) else v for k, v in values.items()}
    # A parameter left out arrives as None; an option whose default is not None then keeps its default.
    defaults = Options()
    plain = {k: v for k, v in plain.items() if v is not None or getattr(defaults, k) is None}
    return Options(**plain).check(max_length)


def check_attachment(
    attachment: discord.Attachment | None, what: str, max_bytes: int, *, missing: str | None = None
) -> discord.Attachment | None:
    """An attached MIDI file as it is declared (name and size), before anything is downloaded; `BadSeed`
    says what is wrong. With `missing`, no file is an error too."""
    if attachment is None:
        if missing:
            raise BadSeed(missing)
        return None
    if not attachment.filename.lower().endswith(SEED_SUFFIXES):
        raise BadSeed(f"the {what} must be a MIDI file (.mid or .midi)")
    if attachment.size > max_bytes:
        raise BadSeed(f"the {what} is larger than {max_bytes // 1024} KiB")
    return attachment


Length = _range("length")
Temperature = _range("temperature")
TopP = _range("top_p")
Tempo = _range("tempo")
RngSeed = _range("rng_seed")
