"""A seed's meter and where its bars start: from its time signatures, else estimated from its onsets.

Times are quarter notes from the start of the file (after the reader's own cuts), as in `Event`. A bar
starts at every `downbeat + k * bar`. A file's time signature event starts a bar where it stands, so a pickup
written as a short first bar (a 1/4 bar, then 4/4) puts the downbeats after the pickup. Without a time
signature the meter is estimated from the onsets: 4/4 or 3/4, whichever puts the heaviest onsets (long
notes, chords) on its downbeats more clearly, 4/4 when neither does; and in a seed with no steady beat
(onsets off every sixteenth and triplet grid, a tempo change on most beats, too few onsets to tell) bars
are 4/4 from the first note. `Meter.assumed` says what a reply should tell the user.

The rhythmic grid (`seed_grid`) is what the sampler keeps: eighths or sixteenths, counted from the beats
of the file (its quarter notes), when at least `GRID_SHARE` of the onsets fall on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.music.events import GRID, Event

GRID_SHARE = 0.9  # onsets on the grid for a seed to keep to it (the "strictly on an eighth grid")
STEADY_SHARE = 0.8  # onsets on a sixteenth or eighth-triplet grid for a beat to count as steady
MIN_ONSETS = 8  # fewer onsets say nothing about where bars start
CLEAR = 1.2  # how much more clearly 3/4 must mark its downbeats than 4/4 to be chosen over it
GRIDS = (GRID // 2, GRID // 4)  # eighths (6 steps), sixteenths (3 steps)
# What the network is told at every token (`meter_ids`): how long the bar is and where in it the time
# stands, as one id. Bars are told apart by their length in quarters up to `METER_QUARTERS` (a 6/8 bar is
# three quarters long, 2/2 as long as 4/4); longer bars count as that many and positions past it as its
# last quarter.
METER_QUARTERS = 8
METER_IDS = METER_QUARTERS * METER_QUARTERS * GRID


@dataclass(frozen=True)
class Meter:
    """A time signature and the time of one downbeat (quarters); `source` says how it was found."""

    numerator: int = 4
    denominator: int = 4
    downbeat: float = 0.0
    source: str = "file"  # "file", "onsets" (estimated), "unsteady" (no steady beat), "default" (no seed)

    @property
    def bar(self) -> float:
        """Quarter notes per bar."""
        return self.numerator * 4 / self.denominator

    @property
    def name(self) -> str:
        return f"{self.numerator}/{self.denominator}"

    def bar_start(self, t: float) -> float:
        """The downbeat of the bar that `t` falls in."""
        return t - self.in_bar(t)

    def in_bar(self, t: float) -> float:
        """Quarters from the last downbeat at or before `t`."""
        return round((t - self.downbeat) % self.bar, 6) % self.bar

    @property
    def bar_steps(self) -> int:
        """Grid steps per bar (at least one beat's worth, so a 1/8 bar still counts time)."""
        return max(GRID, round(self.bar * GRID))

    def position(self, t: float) -> int:
        """Grid steps from the last downbeat at or before `t`."""
        return round(self.in_bar(t) * GRID) % self.bar_steps

    def to_json(self) -> list:
        return [self.numerator, self.denominator, self.downbeat]

    @classmethod
    def from_json(cls, data: list) -> Meter:
        """The meter `to_json` wrote (a training piece's, kept in its cache and tokens file)."""
        n, d, downbeat = data
        return cls(int(n), int(d), float(downbeat), "file")

    def moved(self, quarters: float) -> Meter:
        """The same meter for times moved by `quarters`."""
        return Meter(self.numerator, self.denominator, (self.downbeat + quarters) % self.bar, self.source)

    @property
    def assumed(self) -> str:
        """What a reply says when a seed's meter was not read from the file; empty when it was."""
        return self.assumption("seed", "continued")

    def assumption(self, what: str, done: str) -> str:
        """What a reply says when the meter of the file (`what`: "seed", "melody") was not read from it
        but assumed, and the piece `done` in it ("continued", "harmonized"); empty when it was read."""
        if self.source == "onsets":
            return (
                f"the {what} has no time signature: {done} in {self.name} with bars where its notes suggest"
            )
        if self.source == "unsteady":
            return f"the {what} has no steady beat: {done} in 4/4 with bars from its first note"
        return ""


def onset_steps(events: Sequence[Event]) -> list[int]:
    """Each distinct onset in grid steps."""
    return sorted({round(e.onset * GRID) for e in events})


def seed_grid(events: Sequence[Event]) -> int:
    """The grid (steps: 6 eighths, 3 sixteenths) at least `GRID_SHARE` of the onsets keep to, else 0."""
    steps = onset_steps(events)
    if len(steps) < MIN_ONSETS:
        return 0
    for grid in GRIDS:
        if sum(s % grid == 0 for s in steps) >= GRID_SHARE * len(steps):
            return grid
    return 0


def steady(events: Sequence[Event], tempo_changes: int = 0) -> bool:
    """Whether the onsets keep to a beat: most on a sixteenth or eighth-triplet grid, enough of them, and
    the tempo not changing on most beats (a performance recorded with its tempo following the player)."""
    steps = onset_steps(events)
    if len(steps) < MIN_ONSETS:
        return False
    beats = (steps[-1] - steps[0]) / GRID
    if tempo_changes > max(4, beats / 2):
        return False
    on = sum(s % 3 == 0 or s % 4 == 0 for s in steps)
    return on >= STEADY_SHARE * len(steps)


def _weights(events: Sequence[Event]) -> dict[int, float]:
    """How heavy each onset (in steps) sounds: its longest note (up to a bar) and how many notes start."""
    out: dict[int, float] = {}
    for e in events:
        s = round(e.onset * GRID)
        out[s] = out.get(s, 0.0) + min(e.duration, 4.0) + 0.5 * len(e.pitches)
    return out


def _downbeat(weights: dict[int, float], bar: int) -> tuple[int, float]:
    """The beat (steps, within a bar of `bar` steps) whose onsets weigh most, and how much more they weigh
    than the beats' average."""
    per_beat: dict[int, float] = {}
    for s, w in weights.items():
        if s % GRID == 0:
            per_beat[s % bar] = per_beat.get(s % bar, 0.0) + w
    if not per_beat:
        return 0, 0.0
    mean = sum(per_beat.values()) / (bar // GRID)
    best = max(sorted(per_beat), key=lambda k: per_beat[k])
    return best, per_beat[best] / mean if mean else 0.0


def estimate_meter(events: Sequence[Event], tempo_changes: int = 0) -> Meter:
    """4/4 or 3/4 and the downbeat the onsets suggest; 4/4 from the first note when there is no steady beat."""
    if not events:
        return Meter(source="unsteady")
    if not steady(events, tempo_changes):
        first = min(e.onset for e in events)
        return Meter(4, 4, first % 4, "unsteady")
    weights = _weights(events)
    four, clear4 = _downbeat(weights, 4 * GRID)
    three, clear3 = _downbeat(weights, 3 * GRID)
    if clear3 > CLEAR * clear4:
        return Meter(3, 4, three / GRID, "onsets")
    return Meter(4, 4, four / GRID, "onsets")


def valid_signature(numerator: int, denominator: int) -> bool:
    """A time signature a bar can be counted in: 1-32 beats of a whole note divided by a power of two."""
    return 1 <= numerator <= 32 and denominator in (1, 2, 4, 8, 16, 32)


def meter_of(
    events: Sequence[Event], signatures: Sequence[tuple[float, int, int]], tempo_changes: int = 0
) -> Meter:
    """The meter in force at the seed's last onset: the last time signature (time, numerator,
    denominator) at or before it, else the first one, else estimated from the onsets."""
    last = max((e.onset for e in events), default=0.0)
    valid = [(t, n, d) for t, n, d in signatures if valid_signature(n, d)]
    if not valid:
        return estimate_meter(events, tempo_changes)
    before = [s for s in valid if s[0] <= last + 1e-9]
    t, n, d = before[-1] if before else valid[0]
    meter = Meter(n, d, 0.0)
    return Meter(n, d, meter.in_bar(t), "file")


def meter_ids(positions, bar_steps, minimum=None):
    """The network's metrical input: one id in 0..METER_IDS-1 for each position (steps from the downbeat)
    in a bar of `bar_steps` steps. Works on NumPy arrays and, with `minimum=ops.minimum`, on tensors."""
    minimum = minimum or np.minimum
    quarters = minimum(bar_steps // GRID, METER_QUARTERS)
    beat = minimum(positions // GRID, METER_QUARTERS - 1)
    return (quarters - 1) * (METER_QUARTERS * GRID) + beat * GRID + positions % GRID


def stream_meter_ids(shift_steps: np.ndarray, meter: Meter, start: int | None = None) -> np.ndarray:
    """`meter_ids` for every token of a stream whose time starts at 0 (a piece as the corpus encodes it):
    `shift_steps` is how many steps each token moves time (0 for all but shifts); each token's id is
    where the time stands once it is read. `start`: where in its bar the stream's time begins (steps from
    the downbeat), by default the meter's own phase (a primer cut from a seed begins elsewhere)."""
    first = meter.position(0.0) if start is None else start
    positions = (first + np.cumsum(shift_steps)) % meter.bar_steps
    return meter_ids(positions.astype(np.int32), meter.bar_steps).astype(np.int32)


def score_meter(numerator: int, denominator: int, first_bar: float) -> Meter:
    """The meter of a score whose first bar (a pickup when shorter) starts at `first_bar` quarters: a
    pickup bar's time is counted back from the full bar it belongs to."""
    meter = Meter(numerator, denominator, 0.0, "file")
    return Meter(numerator, denominator, first_bar % meter.bar, "file")
