"""Options as text, one way for every channel: the state a button id carries, and the record a job holds.

Every field of `bot.options.Options` has a one-letter tag here; `encode` writes the fields that differ from
their defaults as `<tag><text>` parts (numbers as `bot.options.number_text` writes them, never with an
exponent; a choice as its index; a flag as `1`), and `decode` reads them back through `Options.check`, so a
value that a button or a record brings in is checked where every other value is. A test holds every field
to a tag, and round-trips each option over its whole range through every channel.
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from typing import Any

from bot.errors import BadOption
from bot.options import CHOICES, FLAGS, SPECS, Options, number_text

# The tag of every field; `rng_seed` is never carried by a button (a re-roll draws a new one) but a record
# keeps it. Tags are part of ids already posted on Discord: never reuse one for another field.
TAGS: dict[str, str] = {
    "length": "l",
    "temperature": "t",
    "top_p": "p",
    "tempo": "b",
    "instrument": "i",
    "rng_seed": "r",
    "include_seed": "n",
    "key": "k",
    "video": "v",
    "style": "y",
    "performance": "f",
}
FIELDS = {tag: name for name, tag in TAGS.items()}
_DEFAULTS = Options()
_NUMBER = re.compile(r"\d{1,12}(\.\d{1,12})?")
_INDEX = re.compile(r"\d{1,3}")


def _text(name: str, value: Any) -> str:
    if name in SPECS:
        return number_text(value, SPECS[name].decimals)
    if name in CHOICES:
        return str(CHOICES[name].index(value))
    if name in FLAGS:
        return "1" if value else "0"
    return str(int(value))  # the instrument


def _value(name: str, text: str) -> Any:
    """One field's value from its text, or `BadOption`; the range is `Options.check`'s to judge."""
    label = name.replace("_", " ")
    if name in SPECS:
        if not _NUMBER.fullmatch(text):
            raise BadOption(f"{label} is not a number")
        return int(text) if SPECS[name].kind is int and "." not in text else float(text)
    if name in CHOICES:
        if not _INDEX.fullmatch(text) or int(text) >= len(CHOICES[name]):
            raise BadOption(f"{label} is not one of the choices")
        return CHOICES[name][int(text)]
    if name in FLAGS:
        if text not in ("0", "1"):
            raise BadOption(f"{label} must be 0 or 1")
        return text == "1"
    if not _INDEX.fullmatch(text):
        raise BadOption(f"{label} is not a number")
    return int(text)


def encode(options: Options, *, rng_seed: bool = False) -> list[str]:
    """The `<tag><text>` parts of the fields that differ from the defaults (the RNG seed only if asked)."""
    parts = []
    for name, tag in TAGS.items():
        value = getattr(options, name)
        if value != getattr(_DEFAULTS, name) and (rng_seed or name != "rng_seed"):
            parts.append(tag + _text(name, value))
    return parts


def decode(parts: list[str], max_length: int | None = None) -> Options:
    """Checked options from `encode`'s parts; `BadOption` for an unknown tag, a repeated one or a bad value."""
    values: dict[str, Any] = {}
    for part in parts:
        name = FIELDS.get(part[:1])
        if name is None or name in values:
            raise BadOption(f"unknown or repeated option {part[:12]!r}")
        values[name] = _value(name, part[1:])
    options = Options(**values)
    return options.check() if max_length is None else options.check(max_length)


def record(options: Options) -> dict:
    """The options as a job's JSON record."""
    return asdict(options)


def from_record(data: dict) -> Options:
    """Checked options from a job's record; fields a newer or older version wrote are left to defaults."""
    known = {f.name for f in fields(Options)}
    return Options(**{k: v for k, v in data.items() if k in known}).check()
