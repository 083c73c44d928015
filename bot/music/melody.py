"""The melody of a MIDI file, made ready to be harmonized as a chorale's soprano.

The file goes through the bounded reader (`read_midi`), so a hostile file costs what a hostile seed costs.
Its melody is its highest voice: at each onset the highest pitch that starts there, and a note still
sounding when a higher one starts is cut at that point (a "skyline"). Drums are ignored by the reader. The
line is then moved by whole octaves to sit where a soprano sings; a line wider than the soprano's range is
folded into it (`fold_octaves`: the fewest, longest runs of notes moved by an octave, never a leap wider
than the tune's own), and the reply says which notes moved. It is refused with one clear line when it cannot
be harmonized: no notes or more than `MAX_MELODY_NOTES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import BadSeed
from bot.music.events import GRID, Event
from bot.music.meter import Meter, meter_of
from bot.music.midi import DEFAULT_LIMITS, SeedLimits, read_bounded, read_midi

MAX_MELODY_NOTES = 400
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
    source: list[Event] = field(default_factory=list)  # the line as the file has it, before any octave move
    moved: dict[int, int] = field(default_factory=dict)  # note index -> octaves moved beyond `octaves`
    meter: Meter = field(default_factory=Meter)  # its time signature and where its bars start, in its times

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


# Costs of a folding, in semitones of leap added beyond the tune's own: a run cut in two costs as much as a
# leap three semitones wider (less where the melody breathes, at a rest), each note moved a quarter, and a
# step that turns against the tune's direction two.
_LEAP, _CUT, _CUT_AT_REST, _MOVE, _TURN = 1.0, 3.0, 1.5, 0.25, 2.0


def _link(step: int, octaves: int, rest: bool) -> float:
    """The cost of a tune's interval `step` when the second note moves `octaves` more than the first."""
    folded = step + 12 * octaves
    cost = _LEAP * max(0, abs(folded) - abs(step)) + (_TURN if folded * step < 0 else 0.0)
    return cost + (0.0 if octaves == 0 else _CUT_AT_REST if rest else _CUT)


def fold_octaves(notes: Sequence[Event], low: int = SOPRANO_LOW, high: int = SOPRANO_HIGH) -> list[int]:
    """The octaves (a whole number for each note) that put every note of the line inside [low, high].

    A Viterbi path over each note's possible octaves: where the line leaves the range, whole runs of notes
    move, cut where the tune leaps (there the cut narrows the leap) or rests, so the shape is kept and no
    interval grows wider than the tune's own unless the range leaves no other way.
    """
    pitches = [n.pitches[0] for n in notes]
    choices = [[k for k in range(-10, 11) if low <= p + 12 * k <= high] for p in pitches]
    best: tuple[float, float, list[int]] | None = None
    for base in sorted({k for ks in choices for k in ks}):
        cost = {k: _MOVE * (k != base) for k in choices[0]}
        back: list[dict[int, int]] = []
        for i in range(1, len(pitches)):
            step = pitches[i] - pitches[i - 1]
            rest = notes[i].onset > notes[i - 1].onset + notes[i - 1].duration + 1e-9
            here, links = {}, {}
            for k in choices[i]:
                j = min(cost, key=lambda j: cost[j] + _link(step, k - j, rest))
                here[k], links[k] = cost[j] + _link(step, k - j, rest) + _MOVE * (k != base), j
            cost = here
            back.append(links)
        k = min(cost, key=lambda k: cost[k])
        path = [k]
        for links in reversed(back):
            path.append(links[path[-1]])
        path.reverse()
        mean = sum(p + 12 * k for p, k in zip(pitches, path)) / len(pitches)
        score = (round(cost[k], 6), abs(mean - SOPRANO_CENTRE), path)
        if best is None or score[:2] < best[:2]:
            best = score
    assert best is not None
    return best[2]


def bar_list(bars: Sequence[int]) -> str:
    """Bar numbers as runs: [3, 4, 9] -> "bars 3-4, 9"."""
    runs: list[list[int]] = []
    for b in sorted(set(bars)):
        if runs and b == runs[-1][1] + 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)
    return ("bars " if len(runs) > 1 or runs[0][1] > runs[0][0] else "bar ") + text


def bar_number(t: float, meter: Meter) -> int:
    """The bar `t` falls in, counted from 1 as a score (and the written .mid) counts them: a pickup is bar 1."""
    return round((meter.bar_start(t) - meter.bar_start(0.0)) / meter.bar) + 1


def moved_text(notes: Sequence[Event], moved: dict[int, int], meter: Meter | None = None) -> str:
    """What a reply says about the notes folded into the range, e.g. "7 notes moved by an octave: bars 3-4, 9"."""
    if not moved:
        return ""
    how = "an octave" if all(abs(k) == 1 for k in moved.values()) else "octaves"
    bars = [bar_number(notes[i].onset, meter or Meter()) for i in moved]
    count = f"{len(moved)} note{'s' if len(moved) != 1 else ''}"
    return f"{count} moved by {how} to fit a soprano's range: {bar_list(bars)}"


def fold_line(notes: Sequence[Event]) -> tuple[list[Event], int, dict[int, int]]:
    """`notes` folded into the soprano's range: the notes, the octaves the whole line moved, and the notes
    moved further (index -> octaves)."""
    path = fold_octaves(notes)
    base = max(set(path), key=lambda k: (path.count(k), -abs(k)))
    folded = [Event(n.onset, n.duration, (n.pitches[0] + 12 * k,), n.velocity) for n, k in zip(notes, path)]
    return folded, base, {i: k - base for i, k in enumerate(path) if k != base}


def melody_from_events(
    events: Sequence[Event],
    name: str = "melody",
    tempo: float = 100.0,
    meta: dict | None = None,
    meter: Meter | None = None,
) -> Melody:
    """The top line of `events`, checked against the limits and folded into the soprano's range.

    `meter` is the file's (`meter_of`); without one it is estimated from `events` as a seed's is.
    """
    notes = top_line(events)
    if not notes:
        raise BadMelody("the melody has no notes (drums are ignored)")
    if len(notes) > MAX_MELODY_NOTES:
        raise BadMelody(f"the melody has {len(notes)} notes: at most {MAX_MELODY_NOTES} can be harmonized")
    meter = meter or meter_of(events, [])
    # Whole bars of silence before the first note are dropped; the bar position of every note is kept.
    bars = max(0.0, meter.bar_start(notes[0].onset))
    meter = meter.moved(-bars)
    source = [Event(n.onset - bars, n.duration, n.pitches, n.velocity) for n in notes]
    folded, octaves, moved = fold_line(source)
    info = {
        **(meta or {}),
        "melody_notes": len(folded),
        "octaves_moved": octaves,
        "notes_folded": len(moved),
        "quarters_dropped": bars,
        "meter": f"{meter.name} from {meter.downbeat:g} ({meter.source})",
    }
    return Melody(name, folded, float(tempo), octaves, info, source, moved, meter)


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
    # The same meter a seed would have: the file's time signature, else the one its onsets suggest.
    meter = meter_of(piece.events, piece.meta.get("time_signatures", []), piece.meta.get("tempo_changes", 0))
    return melody_from_events(piece.events, name, piece.tempo, piece.meta, meter)


def read_melody_file(path: Path, limits: SeedLimits = DEFAULT_LIMITS) -> Melody:
    """`read_melody` on a file, refused by its size before it is read."""
    data = read_bounded(path, limits.max_bytes, "the melody file", BadMelody)
    return read_melody(data, Path(path).stem or "melody", limits)
