"""The melody of a MIDI file, made ready to be harmonized as a chorale's soprano.

The file goes through the bounded reader (`read_midi`), so a hostile file costs what a hostile seed costs.
Its melody is its highest voice: at each onset the highest pitch that starts there, and a note still
sounding when a higher one starts is cut at that point (a "skyline"). Drums are ignored by the reader. The
line is then moved by whole octaves to sit where a soprano sings, and refused with one clear line when it
cannot be harmonized: no notes, more than `MAX_MELODY_NOTES`, or a range no soprano can hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import BadSeed
from bot.music.events import GRID, Event
from bot.music.midi import DEFAULT_LIMITS, SeedLimits, read_bounded, read_midi

MAX_MELODY_NOTES = 400
MAX_SPAN = 36  # semitones: wider than three octaves cannot be a soprano line in any octave
SOPRANO_LOW, SOPRANO_HIGH = 60, 81  # C4-A5, where the chorales' sopranos sing
SOPRANO_CENTRE = 70


class BadMelody(BadSeed):
    """A melody file that cannot be harmonized; its text is shown to the user as it is."""


@dataclass
class Melody:
    """A single line of notes (one pitch per event, none overlapping), in the soprano's range."""

    name: str
    notes: list[Event]
    tempo: float
    octaves: int = 0  # how many octaves the file's line was moved to reach the soprano's range
    meta: dict = field(default_factory=dict)

    @property
    def pitches(self) -> list[int]:
        return [n.pitches[0] for n in self.notes]

    @property
    def end(self) -> float:
        return max((n.onset + n.duration for n in self.notes), default=0.0)


def top_line(events: Sequence[Event]) -> list[Event]:
    """The highest voice of `events`: one note at a time, a note cut where a higher one starts.

    Onsets and durations stay on the events' grid (the reader put them there), so they are compared
    in whole grid steps and a cut note keeps an exact length.
    """
    # (onset, end, pitch, velocity) in grid steps: the highest pitch starting at each onset, held longest.
    tops: dict[int, tuple[int, int, int]] = {}
    for e in events:
        on = round(e.onset * GRID)
        end = on + max(1, round(e.duration * GRID))
        pitch = max(e.pitches)
        best = tops.get(on)
        if best is None or (pitch, end) > (best[1], best[0]):
            tops[on] = (end, pitch, e.velocity)
    line: list[list[int]] = []
    for on in sorted(tops):
        end, pitch, velocity = tops[on]
        if line and on < line[-1][1]:
            if pitch <= line[-1][2]:
                continue  # starts under a note still sounding: an inner voice, not the melody
            line[-1][1] = on  # a higher voice enters: the sounding note ends here
        line.append([on, end, pitch, velocity])
    return [Event(on / GRID, (end - on) / GRID, (pitch,), velocity) for on, end, pitch, velocity in line]


def soprano_octaves(pitches: Sequence[int]) -> int:
    """The whole-octave move that puts most of the line inside the soprano's range, nearest its centre."""
    mean = sum(pitches) / len(pitches)

    def score(k: int) -> tuple[int, float]:
        inside = sum(SOPRANO_LOW <= p + 12 * k <= SOPRANO_HIGH for p in pitches)
        return inside, -abs(mean + 12 * k - SOPRANO_CENTRE)

    return max(range(-6, 7), key=score)


def melody_from_events(
    events: Sequence[Event], name: str = "melody", tempo: float = 100.0, meta: dict | None = None
) -> Melody:
    """The top line of `events`, checked against the limits and moved into the soprano's range."""
    notes = top_line(events)
    if not notes:
        raise BadMelody("the melody has no notes (drums are ignored)")
    if len(notes) > MAX_MELODY_NOTES:
        raise BadMelody(f"the melody has {len(notes)} notes: at most {MAX_MELODY_NOTES} can be harmonized")
    pitches = [n.pitches[0] for n in notes]
    span = max(pitches) - min(pitches)
    if span > MAX_SPAN:
        raise BadMelody(
            f"the melody spans {span} semitones: a soprano line must fit in three octaves ({MAX_SPAN})"
        )
    octaves = soprano_octaves(pitches)
    # Whole bars of silence before the first note are dropped; the bar position of every note is kept.
    bars = math.floor(notes[0].onset / 4) * 4
    moved = [Event(n.onset - bars, n.duration, (n.pitches[0] + 12 * octaves,), n.velocity) for n in notes]
    info = {**(meta or {}), "melody_notes": len(moved), "octaves_moved": octaves, "quarters_dropped": bars}
    return Melody(name, moved, float(tempo), octaves, info)


def read_melody(data: bytes, name: str = "melody", limits: SeedLimits = DEFAULT_LIMITS) -> Melody:
    """The melody of an untrusted MIDI file; any problem raises `BadMelody` (a `BadSeed`) in one line."""
    try:
        piece = read_midi(data, name, limits)
    except BadMelody:
        raise
    except BadSeed as err:
        # The reader calls every file a seed; here the user sent a melody.
        raise BadMelody(str(err).replace("the seed", "the melody", 1)) from err
    dropped = piece.meta.get("notes_dropped_over_limit", 0)
    if dropped:
        # The reader keeps a long file's last notes; a melody with its beginning cut off is not the user's.
        raise BadMelody(
            f"the melody file has more than {limits.max_notes} notes: at most {MAX_MELODY_NOTES} melody "
            "notes can be harmonized"
        )
    return melody_from_events(piece.events, name, piece.tempo, piece.meta)


def read_melody_file(path: Path, limits: SeedLimits = DEFAULT_LIMITS) -> Melody:
    """`read_melody` on a file, refused by its size before it is read."""
    data = read_bounded(path, limits.max_bytes, "the melody file", BadMelody)
    return read_melody(data, Path(path).stem or "melody", limits)
