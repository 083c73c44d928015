"""How the options of `bot.options` appear as slash-command parameters: ranges Discord enforces in the
client, descriptions within its 100 characters, and the choices of instrument, key and performance."""

from __future__ import annotations

from discord import app_commands

from bot.options import INSTRUMENTS, KEYS, PERFORMANCES, SPECS

SEED_SUFFIXES = (".mid", ".midi")  # what an attached seed or melody may be called
INSTRUMENT_CHOICES = [app_commands.Choice(name=name, value=program) for name, program in INSTRUMENTS.items()]
KEY_CHOICES = [app_commands.Choice(name=name, value=name) for name in KEYS]  # 24: Discord allows 25
PERFORMANCE_CHOICES = [app_commands.Choice(name=name, value=name) for name in PERFORMANCES]


def _range(name: str):
    """The option's range from `bot.options`, for Discord to enforce in the client."""
    spec = SPECS[name]
    return app_commands.Range[spec.kind, spec.lo, spec.hi]


def describe(name: str) -> str:
    """The option's help and range, as a parameter's description."""
    spec = SPECS[name]
    return f"{spec.help} ({spec.range_text()})"[:100]


Length = _range("length")
Temperature = _range("temperature")
TopP = _range("top_p")
Tempo = _range("tempo")
RngSeed = _range("rng_seed")
