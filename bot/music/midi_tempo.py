"""A Standard MIDI File's time: where its ticks fall in beats and seconds, and the range tempos clamp to.

The reader (`bot.music.midi`) builds a `TempoMap` from a file's tempo changes; the writer
(`bot.music.midi_out`) clamps the tempo it writes to the same range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEMPO_LOW, TEMPO_HIGH = 20.0, 400.0  # quarter notes per minute; anything outside is clamped, read or written
DEFAULT_US_PER_BEAT = 500_000  # the standard's default tempo, 120 bpm, until a file sets one


def _clamp_us_per_beat(us: int) -> float:
    # Clamping microseconds rather than bpm means a tempo of 0 microseconds never divides anything.
    return min(max(float(us), 60e6 / TEMPO_HIGH), 60e6 / TEMPO_LOW)


@dataclass
class TempoMap:
    """Each tempo change's position in ticks, seconds and beats, and the tempo from there on.

    With a PPQ division a beat is `ticks_per_beat` ticks whatever the tempo, so beats come from ticks
    alone and stay on the grid the file was written on; the tempo only says how long each beat lasts in
    seconds (used for the reader's time limits). With an SMPTE division ticks are real time, and the tempo
    map is what says where the beats fall.
    """

    tick: np.ndarray
    second: np.ndarray
    beat: np.ndarray
    us: np.ndarray  # microseconds per beat from each change on, clamped
    ticks_per_beat: int
    ticks_per_second: float

    @classmethod
    def build(cls, tempos: list[tuple[int, int]], ticks_per_beat: int, ticks_per_second: float) -> TempoMap:
        changes: dict[int, float] = {0: float(DEFAULT_US_PER_BEAT)}
        for tick, us in sorted(tempos, key=lambda t: t[0]):  # stable: the last change at a tick wins
            changes[tick] = _clamp_us_per_beat(us)
        tick = np.array(sorted(changes), dtype=np.float64)
        us = np.array([changes[t] for t in sorted(changes)], dtype=np.float64)
        gaps = np.diff(tick)
        if ticks_per_beat:
            beat = tick / ticks_per_beat
            second = np.concatenate([[0.0], np.cumsum(gaps * us[:-1] / 1e6 / ticks_per_beat)])
        else:
            second = tick / ticks_per_second
            beat = np.concatenate([[0.0], np.cumsum(gaps / ticks_per_second * 1e6 / us[:-1])])
        return cls(tick, second, beat, us, ticks_per_beat, ticks_per_second)

    def at(self, ticks: np.ndarray) -> np.ndarray:
        """Index of the tempo in force at each tick."""
        return np.searchsorted(self.tick, ticks, side="right") - 1

    def seconds(self, ticks: np.ndarray) -> np.ndarray:
        if not self.ticks_per_beat:
            return ticks / self.ticks_per_second
        i = self.at(ticks)
        return self.second[i] + (ticks - self.tick[i]) * self.us[i] / 1e6 / self.ticks_per_beat

    def beats(self, ticks: np.ndarray) -> np.ndarray:
        if self.ticks_per_beat:
            return ticks / self.ticks_per_beat
        return self.beats_at_seconds(ticks / self.ticks_per_second)

    def beats_at_seconds(self, seconds: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.second, seconds, side="right") - 1
        return self.beat[i] + (seconds - self.second[i]) * 1e6 / self.us[i]


# A seed whose last tempo is below `RITARDANDO` of its pace (the tempo `PACE_PERCENTILE`% of the notes of
# its last `PACE_BEATS` beats are played at or under) and sets fewer than `NEW_TEMPO_ONSETS` onsets is
# slowing into its end (a ritardando, a cadence held), and its continuation goes on "a tempo", at that
# pace. A slower tempo held for more notes is a new tempo, and goes on; a seed of fewer than twice as many
# onsets in those beats has no pace to go back to, and goes on where it ends.
PACE_BEATS = 16.0
PACE_PERCENTILE = 75
RITARDANDO = 0.9
NEW_TEMPO_ONSETS = 4


def continuation_tempo(onsets: np.ndarray, us_per_beat: np.ndarray) -> float:
    """The tempo (bpm) a seed's continuation is played at, from its notes' onsets in beats (sorted) and the
    tempo in force at each: the one at its last onset, where the seed has got to (an accelerando, or a new
    tempo, goes on), unless the seed is slowing into its end; then its pace. A performed piece that slows
    at its last cadence (as this project's own `.mid` files do) goes on at the pace it was played at, not
    at the end of its ritardando."""
    if not len(us_per_beat):
        return 60e6 / DEFAULT_US_PER_BEAT
    end = 60e6 / float(us_per_beat[-1])
    other = np.flatnonzero(us_per_beat != us_per_beat[-1])
    held = len(np.unique(onsets[other[-1] + 1 :] if len(other) else onsets))
    window = onsets >= onsets[-1] - PACE_BEATS
    pace = float(np.percentile(60e6 / us_per_beat[window].astype(float), PACE_PERCENTILE))
    enough = len(np.unique(onsets[window])) >= 2 * NEW_TEMPO_ONSETS
    return pace if enough and end < RITARDANDO * pace and held < NEW_TEMPO_ONSETS else end
