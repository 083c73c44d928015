"""Every option a user can set and every limit on it, defined once.

The slash commands, the command line, the sampler, `/help` and the README's table read their ranges,
defaults and descriptions from `SPECS`; `tests/test_options.py` holds them to it. This module imports
nothing heavier than the standard library, so the chat and queue layers can use it freely.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from bot.errors import BadOption

# General MIDI programs offered by name (any number 0-127 works too).
INSTRUMENTS: dict[str, int] = {
    "piano": 0,
    "harpsichord": 6,
    "celesta": 8,
    "vibraphone": 11,
    "marimba": 12,
    "organ": 19,
    "guitar": 24,
    "strings": 48,
    "choir": 52,
    "trumpet": 56,
    "clarinet": 71,
    "flute": 73,
}
PROGRAM_NAMES = {program: name for name, program in INSTRUMENTS.items()}

MAX_LENGTH = 2000  # the sampler's hard cap; an operator may lower it with MAX_LENGTH
DEFAULT_TEMPO = 100.0
# Discord's upload limit per file for a server without boosts; an interaction carries its own, larger or not.
UPLOAD_LIMIT_BYTES = 10 * 1024 * 1024
RNG_SEED_MAX = 2**31 - 1  # Discord integers are doubles: keep the number exact everywhere

# The 24 keys as a musician spells them (Discord offers at most 25 choices, so they all fit).
_MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
KEYS: tuple[str, ...] = tuple(f"{t} major" for t in _MAJOR_TONICS) + tuple(
    f"{t} minor" for t in _MINOR_TONICS
)
KEY_HELP = "The key to write in; without it, the seed's key or one drawn as often as in the music it learned"
# The styles the shipped model writes, each a token after `<start>` (`bot.music.encoding.STYLES`): the Bach
# chorales, the Monteverdi madrigals and Josquin's masses and motets, the Haydn and Mozart quartets with
# the 19th-century songs for voice and piano of the OpenScore Lieder Corpus, and the folk tunes of
# O'Neill's, Ryan's and Aird's collections, which a network of their own writes (`bot.model.styles`).
# `<other>` opened no training piece.
STYLES: tuple[str, ...] = ("chorale", "renaissance", "classical", "folk")
STYLE_HELP = "The music to write like; without it, the style that fits the seed best, or chorale"
# The temperature a style is sampled at when none is asked for. 1.0 is the setting `etude eval --sweep`
# found closest to the validation chorales. The folk network's tunes at 1.0 repeat a note twice as often
# as real tunes do: at 1.1 a classifier told 32 of them from held-out tunes 73% of the time against 87%
# (78% against 84% with the network trained on all the tunes; `bot/model/form.py` names the tuning tunes,
# and the tunes `etude eval --listener` reports are others).
DEFAULT_TEMPERATURE = 1.0
STYLE_TEMPERATURES: dict[str, float] = {"folk": 1.1}


def style_temperature(style: str | None) -> float:
    """The temperature `style` is sampled at when none is asked for."""
    return STYLE_TEMPERATURES.get(style or "", DEFAULT_TEMPERATURE)


_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}


def key_pitch_class(tonic: str) -> int | None:
    """The pitch class (C = 0) of a tonic such as `F#`, `Eb`, `E-`, `bb` or `B♭`; None if it is none."""
    t = tonic.strip().lower().replace("♯", "#").replace("♭", "b").replace("-", "b")
    if not t or t[0] not in _LETTERS or any(c not in "#b" for c in t[1:]) or len(t) > 3:
        return None
    return (_LETTERS[t[0]] + t[1:].count("#") - t[1:].count("b")) % 12


def key_name(pitch_class: int, mode: str) -> str:
    """The spelling of a key in `KEYS`."""
    tonics = _MAJOR_TONICS if mode == "major" else _MINOR_TONICS
    return f"{tonics[pitch_class % 12]} {mode}"


def parse_key(value: str | None) -> str | None:
    """One of `KEYS` from a user's text (`e minor`, `Eb major`, `F# min`, `Am`); None stays None."""
    if value is None:
        return None
    text = str(value).strip()
    parts = text.replace("_", " ").split()
    mode = None
    if len(parts) == 2 and parts[1].lower() in ("major", "maj", "minor", "min"):
        mode = "major" if parts[1].lower().startswith("maj") else "minor"
        tonic = parts[0]
    elif len(parts) == 1 and len(parts[0]) >= 2 and parts[0].endswith("m"):  # "Am", "F#m"
        mode, tonic = "minor", parts[0][:-1]
    elif len(parts) == 1:
        mode, tonic = "major", parts[0]
    else:
        tonic = ""
    pc = key_pitch_class(tonic) if mode else None
    if pc is None:
        shown = text[:40]
        raise BadOption(
            f"unknown key {shown!r}: use a tonic and major or minor, e.g. 'E minor' or 'Eb major'"
        )
    return key_name(pc, mode)


def cadence_margin(length: int) -> int:
    """How many notes and chords past `length` the closing cadence may take: max(8, length / 10)."""
    return max(8, length // 10)


def number_text(value: int | float, decimals: int = 6) -> str:
    """A number as people and ids write it: `500`, `0.95`, `0.0001`, never with an exponent (`1e-05`)."""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".") or "0"


def _number(value: int | float) -> str:
    return number_text(value)


@dataclass(frozen=True)
class Spec:
    """One numeric option: its range (inclusive unless `lo_open`), its default and what it means."""

    name: str
    kind: type
    default: int | float | None
    lo: int | float
    hi: int | float
    help: str
    lo_open: bool = False
    unit: str = ""
    # A float is kept to this many decimals (it travels in button ids, which hold 100 characters).
    decimals: int = 0

    def range_text(self) -> str:
        """The range as a reader writes it: `1-2000`, or `more than 0, up to 1`."""
        lo, hi = _number(self.lo), _number(self.hi)
        return f"more than {lo}, up to {hi}" if self.lo_open else f"{lo}-{hi}"

    def check(self, value: int | float | None) -> int | float | None:
        """`value` itself when it is in range (None is always allowed for an option whose default is None)."""
        if value is None and self.default is None:
            return None
        label = self.name.replace("_", " ")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadOption(f"{label} must be a number")
        if self.kind is int and (isinstance(value, float) and not value.is_integer()):
            raise BadOption(f"{label} must be a whole number")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadOption(f"{label} must be a finite number")
        low_ok = value > self.lo if self.lo_open else value >= self.lo
        if not low_ok or value > self.hi:
            lo, hi = _number(self.lo), _number(self.hi)
            if self.lo_open:
                raise BadOption(f"{label} must be more than {lo} and at most {hi}")
            raise BadOption(f"{label} must be between {lo} and {hi}{self.unit}")
        if self.kind is int:
            return int(value)
        # Kept to `decimals`: a value below the first step of an open range takes that step (a top-p of
        # 0.00001 samples exactly as 0.0001 does: both keep the likeliest choice alone).
        step = 10.0**-self.decimals
        return max(round(float(value), self.decimals), self.lo + step if self.lo_open else self.lo)


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec(
            "length",
            int,
            500,
            1,
            MAX_LENGTH,
            "Notes and chords to write; the closing cadence may add up to max(8, length/10)",
            unit=" notes",
        ),
        Spec(
            "temperature",
            float,
            None,
            0.05,
            2.0,
            "Lower is safer, higher is wilder; without it, the style's own: 1.0, folk 1.1",
            decimals=4,
        ),
        Spec(
            "top_p",
            float,
            0.95,
            0.0,
            1.0,
            "Sample only from the likeliest choices holding this share of the probability",
            lo_open=True,
            decimals=4,
        ),
        Spec(
            "tempo",
            float,
            None,
            20,
            400,
            "Beats per minute; without it, the seed's tempo or 100",
            unit=" bpm",
            decimals=2,
        ),
        Spec(
            "rng_seed",
            int,
            None,
            0,
            RNG_SEED_MAX,
            "The number under a shared piece: the same options and number make it again",
        ),
    )
}
INSTRUMENT_HELP = "The General MIDI sound to play it with"
SEED_HELP = "A MIDI file for the piece to continue"
MELODY_HELP = "A MIDI file whose melody (its top line) becomes the soprano of a four-part chorale"
VIDEO_HELP = "Also send an .mp4: the piano roll scrolling with the music"
# How the notes are played (bot.music.perform): the first is the default.
PERFORMANCES: tuple[str, ...] = ("expressive", "plain")
PERFORMANCE_HELP = "How it is played: expressive (dynamics, voicing, rubato, pedal) or plain (as written)"


def parse_performance(value: str) -> str:
    """One of `PERFORMANCES` from a user's text, in any case."""
    text = str(value).strip().lower()
    if text not in PERFORMANCES:
        raise BadOption(f"unknown performance {str(value)[:40]!r}: use {' or '.join(PERFORMANCES)}")
    return text


def parse_instrument(value: str | int) -> int:
    """A General MIDI program from a number (0-127) or one of `INSTRUMENTS`."""
    text = str(value).strip().lower()
    if text.isascii() and text.isdigit() and 0 <= int(text) <= 127:
        return int(text)
    if text in INSTRUMENTS:
        return INSTRUMENTS[text]
    shown = str(value)[:40]
    raise BadOption(f"unknown instrument {shown!r}: use 0-127 or one of {', '.join(INSTRUMENTS)}")


@dataclass(frozen=True)
class Options:
    """What a user may ask for; `check()` turns anything out of range into a `BadOption`."""

    length: int = SPECS["length"].default
    temperature: float | None = None  # None: the style's own (`style_temperature`)
    top_p: float = SPECS["top_p"].default
    tempo: float | None = None  # None: the seed's tempo, or DEFAULT_TEMPO
    instrument: int = 0
    rng_seed: int | None = (
        None  # None: drawn by `with_rng_seed()`, reported back so the piece can be made again
    )
    include_seed: bool = False
    key: str | None = None  # one of KEYS; None: the seed's key, or one drawn by the RNG seed
    style: str | None = None  # one of STYLES; None: the one that fits the seed best, or chorale
    video: bool = False  # also an .mp4 of the piano roll scrolling with the audio
    performance: str = PERFORMANCES[0]  # one of PERFORMANCES

    def check(self, max_length: int = MAX_LENGTH) -> Options:
        """These options with every value in range and numbers kept to their decimals (`BadOption` for
        anything else); `max_length` is an operator's lower cap."""
        values = {name: spec.check(getattr(self, name)) for name, spec in SPECS.items()}
        if values["length"] > max_length:
            raise BadOption(f"length can be at most {max_length} notes here")
        if isinstance(self.instrument, bool) or not isinstance(self.instrument, int):
            raise BadOption("instrument must be a General MIDI program, 0-127")
        if not 0 <= self.instrument <= 127:
            raise BadOption("instrument must be a General MIDI program, 0-127")
        for name, choices in CHOICES.items():
            value = getattr(self, name)
            # None is "not given" for a choice whose default is None (key, style); others must be one.
            if (value is not None or choices[0] == getattr(_DEFAULT, name)) and value not in choices:
                raise BadOption(f"{name} must be one of: {', '.join(choices)}")
        for name in FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise BadOption(f"{name.replace('_', ' ')} must be true or false")
        return replace(self, **values)

    def for_style(self, style: str | None) -> Options:
        """These options with the temperature the piece is sampled at: the one asked for, or the style's."""
        return self if self.temperature is not None else replace(self, temperature=style_temperature(style))

    def with_rng_seed(self) -> Options:
        """These options with an RNG seed: the given one, or a fresh random one."""
        return self if self.rng_seed is not None else replace(self, rng_seed=random.randrange(RNG_SEED_MAX))


# Options that take one of a list of names (None, where allowed, leaves the choice to the piece), and the
# options that are switched on or off. Every field of `Options` is a number of `SPECS`, the instrument, one
# of these, or a flag: `bot.codec` carries each kind through button ids and job records.
CHOICES: dict[str, tuple[str, ...]] = {"key": KEYS, "style": STYLES, "performance": PERFORMANCES}
FLAGS: tuple[str, ...] = ("include_seed", "video")


_DEFAULT = Options()


def markdown_table() -> str:
    """The options as the README's table, so the README can be checked against this module."""
    rows = ["| option | range | default | what it does |", "| --- | --- | --- | --- |"]
    for spec in SPECS.values():
        default = "—" if spec.default is None else _number(spec.default)
        rows.append(f"| `{spec.name}` | {spec.range_text()} | {default} | {spec.help} |")
    rows.append(f"| `instrument` | 0-127 or a name | piano | {INSTRUMENT_HELP}: {', '.join(INSTRUMENTS)} |")
    rows.append(f"| `key` | the 24 major and minor keys | the seed's | {KEY_HELP} |")
    rows.append(f"| `style` | {', '.join(STYLES)} | the seed's, or chorale | {STYLE_HELP} |")
    rows.append(f"| `seed` | a `.mid` file | — | {SEED_HELP} |")
    rows.append(f"| `video` | true or false | false | {VIDEO_HELP} |")
    rows.append(f"| `performance` | {' or '.join(PERFORMANCES)} | {PERFORMANCES[0]} | {PERFORMANCE_HELP} |")
    return "\n".join(rows)
