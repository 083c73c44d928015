"""What a listener follows in a piece: its key, its onsets and voices, the chords they spell, its cadences.

Everything here reads a list of `Event`s (onset and duration in beats, MIDI pitches), so it does not
depend on how the model encodes music. The statistics of `bot.music.stats` are counted on this reading,
and the sampler's compiled loop follows the same rules (`chord_table`, `keys.key_profile`). The words used:

- a *note* is one pitch of one event; its pitch class is the pitch modulo 12 (C = 0).
- an *onset* (a moment) is a time at which at least one note starts. What is *sounding* at an onset is
  every distinct pitch that has started at or before it and not yet ended (a held note sounds on).
- *voices*: at each onset the sounding pitches are ranked from the top (soprano = highest). Two
  successive onsets are compared voice by voice only when they sound the same number of pitches, as a
  chorale analysis reads four voices from four sounding pitches; a change of texture is skipped.
- a *key* is estimated by `bot.music.keys` (Krumhansl-Schmuckler on the duration-weighted pitch classes).
- a *chord* at an onset is the triad (major or minor) or dominant seventh whose root and third both
  sound and which leaves at most one sounding pitch class outside it (a passing note); of several, the
  one that covers most pitch classes, then the smaller chord, then the one with its root in the bass.
  Onsets that fit no chord are passed over; successive onsets with the same chord form one *harmony*.
- a *cadence* is a harmony on V or V7 (a dominant: major triad or dominant seventh a fifth above the
  tonic) or on IV/iv (a triad a fourth above) followed directly by a root-position tonic triad (its root
  in the bass; major in a major key, major or minor in a minor key, so a Picardy third counts).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.music.events import Event
from bot.music.keys import Key

TICKS = 480  # times are compared in 1/480 beats: exact for sixteenths, triplets and 32nds alike


# -- onsets, voices and chords -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Moment:
    """One onset: its time, the pitches that start there, and every pitch sounding there (ascending)."""

    time: float
    attacks: tuple[int, ...]
    sounding: tuple[int, ...]


def moments(events: Sequence[Event]) -> list[Moment]:
    notes = sorted(
        (round(e.onset * TICKS), round((e.onset + e.duration) * TICKS), p) for e in events for p in e.pitches
    )
    out: list[Moment] = []
    active: list[tuple[int, int]] = []  # (end tick, pitch) of notes started so far and maybe still sounding
    i = 0
    while i < len(notes):
        t = notes[i][0]
        attacks = set()
        while i < len(notes) and notes[i][0] == t:
            _, end, p = notes[i]
            attacks.add(p)
            active.append((max(end, t + 1), p))  # a zero-length note still sounds at its own onset
            i += 1
        active = [(end, p) for end, p in active if end > t]
        out.append(Moment(t / TICKS, tuple(sorted(attacks)), tuple(sorted({p for _, p in active}))))
    return out


@dataclass(frozen=True)
class Chord:
    root: int
    quality: str  # "major", "minor" or "dom7"
    bass: int  # pitch class of the lowest sounding pitch
    pcs: frozenset[int]  # sounding pitch classes


_TEMPLATES = {"major": (0, 4, 7), "minor": (0, 3, 7), "dom7": (0, 4, 7, 10)}


def chord_of(sounding: Sequence[int]) -> Chord | None:
    """The chord these pitches spell (see the module's docstring), or None."""
    if not sounding:
        return None
    pcs = frozenset(p % 12 for p in sounding)
    bass = min(sounding) % 12
    best, best_score, tied = None, None, False
    for quality, shape in _TEMPLATES.items():
        for root in range(12):
            tones = {(root + i) % 12 for i in shape}
            if root not in pcs or (root + shape[1]) % 12 not in pcs:
                continue
            outside = len(pcs - tones)
            if outside > 1:
                continue
            score = (len(pcs & tones), -outside, -len(shape), root == bass)
            if best_score is None or score > best_score:
                best, best_score, tied = (root, quality), score, False
            elif score == best_score:
                tied = True
    if best is None or tied:
        return None
    return Chord(best[0], best[1], bass, pcs)


QUALITIES = tuple(_TEMPLATES)  # a chord's id is root * 3 + its quality's index here


def chord_id(c: Chord | None) -> int:
    """`root * 3 + quality index` (`QUALITIES`), -1 for no chord: the numbering of `chord_table`."""
    return -1 if c is None else c.root * len(QUALITIES) + QUALITIES.index(c.quality)


@functools.cache
def chord_table() -> np.ndarray:
    """`chord_of` for every set of pitch classes and bass, as one int32 array a compiled loop can index.

    Entry `mask * 12 + bass` is the `chord_id` of the pitch classes whose bits (C = bit 0) make `mask`
    with `bass` the lowest one's pitch class; -1 for no chord (or a bass outside the mask). The same rules
    as `chord_of`, computed for all 4,096 x 12 cases at once.
    """
    bits = (np.arange(4096)[:, None] >> np.arange(12)[None, :]) & 1 == 1  # (mask, pitch class)
    scores = np.full((4096, 12, 3 * 12), -1, np.int64)  # (mask, bass, chord id)
    for q, shape in enumerate(_TEMPLATES.values()):
        for root in range(12):
            tones = np.zeros(12, bool)
            tones[[(root + i) % 12 for i in shape]] = True
            inside = (bits & tones).sum(1)
            outside = (bits & ~tones).sum(1)
            eligible = bits[:, root] & bits[:, (root + shape[1]) % 12] & (outside <= 1)
            # chord_of's score (tones covered, fewer outside, smaller chord, root in the bass) as one number
            base = inside * 1000 + (1 - outside) * 100 + (4 - len(shape)) * 10
            for bass in range(12):
                score = base + (root == bass)
                scores[:, bass, root * 3 + q] = np.where(eligible, score, -1)
    best = scores.max(2)
    unique = (scores == best[:, :, None]).sum(2) == 1
    table = np.where((best >= 0) & unique, scores.argmax(2), -1)
    table[~bits] = -1  # the bass must be one of the pitch classes
    return table.reshape(-1).astype(np.int32)


@dataclass(frozen=True)
class Harmony:
    chord: Chord  # as it sounds at the harmony's first onset (its bass is the arrival's bass)
    start: float
    end: float


def harmonies(ms: Sequence[Moment], end: float) -> list[Harmony]:
    """Successive onsets with the same chord merged; onsets that fit no chord are passed over."""
    out: list[Harmony] = []
    for m in ms:
        c = chord_of(m.sounding)
        if c is None:
            continue
        if out and (out[-1].chord.root, out[-1].chord.quality) == (c.root, c.quality):
            continue
        if out:
            out[-1] = Harmony(out[-1].chord, out[-1].start, m.time)
        out.append(Harmony(c, m.time, end))
    return out


def is_tonic_triad(c: Chord, key: Key) -> bool:
    """Root-position tonic triad: on the tonic, in the bass, nothing but triad tones."""
    if c.root != key.tonic or c.bass != c.root or c.quality == "dom7":
        return False
    if c.quality == "minor" and not key.minor:
        return False
    return c.pcs <= {(c.root + i) % 12 for i in _TEMPLATES[c.quality]}


def leads_to(c: Chord, tonic: int) -> bool:
    """V, V7 or IV/iv of `tonic`."""
    if c.root == (tonic + 7) % 12:
        return c.quality in ("major", "dom7")
    return c.root == (tonic + 5) % 12 and c.quality in ("major", "minor")


def melody(ms: Sequence[Moment]) -> list[tuple[float, int]]:
    """The top voice's notes as (onset, pitch): the onsets where the highest sounding pitch is struck."""
    return [(m.time, m.sounding[-1]) for m in ms if m.sounding and m.sounding[-1] in m.attacks]
