"""Events: the notes and chords a piece is made of, in quarter notes on a grid.

A piece is a list of `Event`s. An event is a note or chord: the pitches that start together and last
equally long (notes that start together but end at different times are separate events). Times are
snapped to `GRID` steps per quarter note, so sixteenths, eighth-note triplets and sixteenth triplets all
land on the grid. How events become token ids is `bot.music.encoding`'s alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

GRID = 12  # steps per quarter note: sixteenths (3), eighth-note triplets (4), sixteenth triplets (2)


@dataclass(frozen=True)
class Event:
    """A note or chord: MIDI pitches that start at `onset` and last `duration` (both in quarter notes).

    `fermata` marks the end of a phrase (the chorales' fermatas).
    """

    onset: float
    duration: float
    pitches: tuple[int, ...]
    velocity: int = 80
    fermata: bool = False


@dataclass
class Piece:
    """A named list of events with the tempo it was written at."""

    name: str
    events: list[Event]
    tempo: float = 100.0  # quarter notes per minute
    meta: dict = field(default_factory=dict)
    pedal: tuple[tuple[float, int], ...] = ()  # sustain pedal (CC64) changes: (beat, value)


def group_notes(notes: Iterable[tuple]) -> list[Event]:
    """Group (onset, duration, pitch, velocity[, fermata]) notes into events sorted by onset, then duration.

    Onsets and durations are snapped to the grid first, so notes a hair apart still form one chord.
    """
    groups: dict[tuple[int, int], dict[int, int]] = {}
    marks: set[tuple[int, int]] = set()
    for note in notes:
        onset, duration, pitch, velocity = note[:4]
        on = max(0, round(onset * GRID))
        dur = max(1, round(duration * GRID))
        groups.setdefault((on, dur), {})
        groups[(on, dur)][int(pitch)] = max(groups[(on, dur)].get(int(pitch), 0), int(velocity))
        if len(note) > 4 and note[4]:
            marks.add((on, dur))
    events = []
    for (on, dur), pitches in sorted(groups.items()):
        vel = round(sum(pitches.values()) / len(pitches))
        events.append(Event(on / GRID, dur / GRID, tuple(sorted(pitches)), vel, (on, dur) in marks))
    return events


def fold_pitch(pitch: int, low: int, high: int) -> int:
    """Move a pitch by octaves into [low, high], keeping its pitch class; clamp if the range is too narrow."""
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return min(max(pitch, low), high)


def transpose(events: Sequence[Event], semitones: int) -> list[Event]:
    return [
        Event(e.onset, e.duration, tuple(p + semitones for p in e.pitches), e.velocity, e.fermata)
        for e in events
    ]


def monophonic_notes(events: Sequence[Event]) -> list[tuple[int, int, int, bool]]:
    """(onset, end, pitch, fermata) in grid steps, with one sounding note per pitch at any time.

    A pitch cannot sound twice at once (a piano key, a MIDI channel, a frame): when it is attacked again
    while sounding, the earlier note stops there; of two attacks at one time the longer note stays. This is
    the form the frames keep exactly.
    """
    by_pitch: dict[int, dict[int, tuple[int, bool]]] = {}
    for e in events:
        on = max(0, round(e.onset * GRID))
        end = on + max(1, round(e.duration * GRID))
        for p in e.pitches:
            notes = by_pitch.setdefault(int(p), {})
            old = notes.get(on)
            if old is None or end > old[0]:
                notes[on] = (end, e.fermata or (old[1] if old else False))
    out = []
    for p, notes in by_pitch.items():
        onsets = sorted(notes)
        for i, on in enumerate(onsets):
            end, mark = notes[on]
            if i + 1 < len(onsets):
                end = min(end, onsets[i + 1])
            out.append((on, end, p, mark))
    out.sort(key=lambda n: (n[0], n[1], n[2]))
    return out


def normalize(events: Sequence[Event]) -> list[Event]:
    """The events as the frames keep them: one sounding note per pitch (see `monophonic_notes`), velocity
    left out, and the phrase mark on every note that starts with a marked one (a frame holds one mark)."""
    notes = monophonic_notes(events)
    marked = {on for on, _, _, f in notes if f}
    return group_notes((on / GRID, (end - on) / GRID, p, 80, on in marked) for on, end, p, _ in notes)
