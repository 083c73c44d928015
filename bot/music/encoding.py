"""Events and tokens: the only place that knows how music becomes token ids.

A piece is a list of `Event`s. An event is a note or a chord: the pitches that start together and last
equally long. Notes that start together but end at different times (one voice holds while another moves)
become separate events with no time between them, so pitches, onsets and durations all survive.

Each event is written as tokens::

    S<steps> [S<steps> ...]  P<pitch> [P<pitch> ...]  D<steps>

time since the previous event's onset (chained when longer than the longest shift), the pitches in
ascending order, then the duration, which also closes the event. Times are counted in `GRID` steps per
quarter note. A piece starts with `<start>`. The network sees token ids only, never MIDI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GRID = 12  # steps per quarter note: sixteenths and eighth-note triplets both land on the grid
MAX_SHIFT = 4 * GRID  # longest single time-shift token; longer rests chain several
MAX_DURATION = 8 * GRID  # longer notes are held for this long
PIANO_LOW, PIANO_HIGH = 21, 108  # A0 .. C8
PAD, START = "<pad>", "<start>"


@dataclass(frozen=True)
class Event:
    """A note or chord: MIDI pitches that start at `onset` and last `duration` (both in quarter notes)."""

    onset: float
    duration: float
    pitches: tuple[int, ...]
    velocity: int = 80


@dataclass
class Piece:
    """A named list of events with the tempo it was written at."""

    name: str
    events: list[Event]
    tempo: float = 100.0  # quarter notes per minute
    meta: dict = field(default_factory=dict)


def group_notes(notes: Iterable[tuple[float, float, int, int]]) -> list[Event]:
    """Group (onset, duration, pitch, velocity) notes into events sorted by onset, then duration.

    Onsets and durations are snapped to the grid first, so notes a hair apart still form one chord.
    """
    groups: dict[tuple[int, int], dict[int, int]] = {}
    for onset, duration, pitch, velocity in notes:
        on = max(0, round(onset * GRID))
        dur = max(1, round(duration * GRID))
        groups.setdefault((on, dur), {})
        groups[(on, dur)][int(pitch)] = max(groups[(on, dur)].get(int(pitch), 0), int(velocity))
    events = []
    for (on, dur), pitches in sorted(groups.items()):
        vel = round(sum(pitches.values()) / len(pitches))
        events.append(Event(on / GRID, dur / GRID, tuple(sorted(pitches)), vel))
    return events


def fold_pitch(pitch: int, low: int, high: int) -> int:
    """Move a pitch by octaves into [low, high], keeping its pitch class; clamp if the range is too narrow."""
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return min(max(pitch, low), high)


def transpose(events: Sequence[Event], semitones: int) -> list[Event]:
    return [Event(e.onset, e.duration, tuple(p + semitones for p in e.pitches), e.velocity) for e in events]


def _nearest(values: Sequence[int], x: int) -> int:
    i = int(np.searchsorted(values, x))
    if i == 0:
        return values[0]
    if i == len(values):
        return values[-1]
    return values[i] if values[i] - x < x - values[i - 1] else values[i - 1]


@dataclass
class Vocabulary:
    """Token ids for the shifts, pitches and durations a model knows.

    Ids are laid out as: `<pad>`, `<start>`, shifts ascending, pitches ascending, durations ascending.
    Pitches form one contiguous range, so transposing a token sequence is adding to pitch ids.
    """

    shifts: list[int]
    pitch_low: int
    pitch_high: int
    durations: list[int]

    def __post_init__(self) -> None:
        if 0 not in self.shifts or MAX_SHIFT not in self.shifts:
            self.shifts = sorted(set(self.shifts) | {0, MAX_SHIFT})
        self.shifts = sorted(self.shifts)
        self.durations = sorted(self.durations)
        self.tokens: list[str] = [PAD, START]
        self.tokens += [f"S{s}" for s in self.shifts]
        self.shift_base = 2
        self.pitch_base = len(self.tokens)
        self.tokens += [f"P{p}" for p in range(self.pitch_low, self.pitch_high + 1)]
        self.duration_base = len(self.tokens)
        self.tokens += [f"D{d}" for d in self.durations]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    # -- sizes and classes -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad(self) -> int:
        return 0

    @property
    def start(self) -> int:
        return 1

    def is_shift(self, t: int) -> bool:
        return self.shift_base <= t < self.pitch_base

    def is_pitch(self, t: int) -> bool:
        return self.pitch_base <= t < self.duration_base

    def is_duration(self, t: int) -> bool:
        return t >= self.duration_base

    def pitch_id(self, pitch: int) -> int:
        return self.pitch_base + pitch - self.pitch_low

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, pieces: Iterable[Sequence[Event]], pitch_margin: int = 6) -> Vocabulary:
        """The shifts and durations seen in `pieces`, and their pitch range widened by `pitch_margin`."""
        shifts: set[int] = set()
        durations: set[int] = set()
        low, high = PIANO_HIGH, PIANO_LOW
        for events in pieces:
            prev = 0
            for e in events:
                on = round(e.onset * GRID)
                delta = on - prev
                while delta > MAX_SHIFT:
                    delta -= MAX_SHIFT
                shifts.add(delta)
                prev = on
                durations.add(min(MAX_DURATION, round(e.duration * GRID)))
                low, high = min(low, *e.pitches), max(high, *e.pitches)
        if not durations:
            raise ValueError("no notes to build a vocabulary from")
        low = max(PIANO_LOW, low - pitch_margin)
        high = min(PIANO_HIGH, high + pitch_margin)
        return cls(sorted(shifts), low, high, sorted(durations))

    def to_json(self) -> dict:
        return {
            "grid": GRID,
            "shifts": self.shifts,
            "pitch_low": self.pitch_low,
            "pitch_high": self.pitch_high,
            "durations": self.durations,
            "tokens": self.tokens,
        }

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        if data.get("grid", GRID) != GRID:
            raise ValueError(f"vocabulary uses a grid of {data['grid']}, this code {GRID}")
        return cls(data["shifts"], data["pitch_low"], data["pitch_high"], data["durations"])

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_json(json.loads(path.read_text()))

    # -- events <-> tokens -------------------------------------------------------------------------
    def fit_pitch(self, pitch: int) -> int:
        """Move a pitch into the vocabulary's range by octaves."""
        return fold_pitch(pitch, self.pitch_low, self.pitch_high)

    def encode(self, events: Sequence[Event], start: bool = True) -> list[int]:
        """Token ids for `events`; unknown shifts and durations map to the nearest known one."""
        ids = [self.start] if start else []
        pos = 0  # decoded position in steps, so rounding errors never accumulate
        for e in events:
            delta = max(0, round(e.onset * GRID) - pos)
            while delta > MAX_SHIFT:
                ids.append(self.index[f"S{MAX_SHIFT}"])
                delta -= MAX_SHIFT
                pos += MAX_SHIFT
            shift = _nearest(self.shifts, delta)
            ids.append(self.index[f"S{shift}"])
            pos += shift
            for p in sorted({self.fit_pitch(p) for p in e.pitches}):
                ids.append(self.pitch_id(p))
            dur = _nearest(self.durations, min(MAX_DURATION, max(1, round(e.duration * GRID))))
            ids.append(self.index[f"D{dur}"])
        return ids

    def decode(self, ids: Iterable[int], velocity: int = 80) -> list[Event]:
        """Events for token ids; tolerates malformed sequences by skipping what cannot form an event."""
        events: list[Event] = []
        pos = 0
        pitches: list[int] = []
        for t in ids:
            t = int(t)
            if self.is_shift(t):
                pos += self.shifts[t - self.shift_base]
                pitches = []
            elif self.is_pitch(t):
                pitches.append(self.pitch_low + t - self.pitch_base)
            elif self.is_duration(t) and pitches:
                dur = self.durations[t - self.duration_base]
                events.append(Event(pos / GRID, dur / GRID, tuple(sorted(set(pitches))), velocity))
                pitches = []
        return events

    def count_events(self, ids: Iterable[int]) -> int:
        return sum(1 for t in ids if self.is_duration(int(t)))

    def grammar(self) -> np.ndarray:
        """`allowed[prev, next]`: which token may follow which, so a sampler only writes valid events.

        After `<start>` or a duration comes a shift; after a shift another shift or a pitch; after a
        pitch a higher pitch or the duration.
        """
        n = len(self)
        allowed = np.zeros((n, n), dtype=bool)
        shifts = slice(self.shift_base, self.pitch_base)
        durations = slice(self.duration_base, n)
        allowed[self.start, shifts] = True
        allowed[durations, shifts] = True
        allowed[self.pad, shifts] = True
        allowed[shifts, shifts] = True
        allowed[shifts, self.pitch_base : self.duration_base] = True
        for t in range(self.pitch_base, self.duration_base):
            allowed[t, t + 1 : self.duration_base] = True
            allowed[t, durations] = True
        return allowed
