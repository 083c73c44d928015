"""How a four-part harmonization sounds, in figures a harmony teacher would check.

A piece is looked at in slices: one at every onset of any voice, where each of soprano, alto, tenor and
bass has the pitch it sounds then (0 when silent). From the slices come:

- `four_voices`: share of slices where the soprano sounds that have all four voices;
- `parallels_per_change`: consecutive fifths or octaves (unisons count as octaves; contrary motion by an
  octave counts too, as in the textbooks) between any two voices that both move, per chord change (a
  pair of four-voice slices in which at least one voice moves);
- `crossings`: share of slices where a lower voice sounds above the voice over it;
- `triads_or_sevenths`: share of four-voice slices whose pitch classes make a major, minor, diminished
  or augmented triad or a seventh chord (dominant, major, minor, half-diminished, diminished; the fifth
  may be left out of a seventh, as it often is in four voices);
- `bass_on_beats` (against a reference): share of whole beats, where both basses sound, on which the bass
  has the reference's pitch class.

The voices of a score with parts are its parts; the voices of a list of events are split by height, with
the given melody as the soprano, so a lower pitch above the melody shows as a crossing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from bot.music.events import Event

VOICES = ("soprano", "alto", "tenor", "bass")
_EPS = 1e-6
_PERFECT = {0, 7}  # interval classes of octaves (and unisons) and fifths

_TRIADS = [(0, 4, 7), (0, 3, 7), (0, 3, 6), (0, 4, 8)]
_SEVENTHS = [(0, 4, 7, 10), (0, 4, 7, 11), (0, 3, 7, 10), (0, 3, 6, 10), (0, 3, 6, 9)]
_CHORDS = frozenset(
    frozenset((root + i) % 12 for i in shape)
    for root in range(12)
    for shape in _TRIADS + _SEVENTHS + [(s[0], s[1], s[3]) for s in _SEVENTHS]
)


def _notes(events: Sequence[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    on = np.array([e.onset for e in events for _ in e.pitches], dtype=np.float64)
    off = np.array([e.onset + e.duration for e in events for _ in e.pitches], dtype=np.float64)
    pitch = np.array([p for e in events for p in e.pitches], dtype=np.int64)
    return on, off, pitch


def _sounding(notes: tuple[np.ndarray, np.ndarray, np.ndarray], t: float) -> np.ndarray:
    on, off, pitch = notes
    return pitch[(on <= t + _EPS) & (off > t + _EPS)]


@dataclass
class FourVoices:
    """A piece as four voices; `at(times)` gives their pitches, soprano first, 0 where one is silent."""

    notes: tuple[np.ndarray, np.ndarray, np.ndarray]  # every note of the piece
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None  # notes of each voice, if known
    melody: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the soprano, if known

    @classmethod
    def from_parts(cls, parts: Sequence[Sequence[Event]]) -> FourVoices:
        """Four parts, soprano first (a chorale's score)."""
        if len(parts) != 4:
            raise ValueError(f"four parts are needed, not {len(parts)}")
        every = [e for part in parts for e in part]
        return cls(_notes(every), [_notes(p) for p in parts])

    @classmethod
    def from_events(cls, events: Sequence[Event], melody: Sequence[Event] | None = None) -> FourVoices:
        """Events split into voices by height; with `melody`, that line is the soprano wherever it sounds."""
        return cls(_notes(events), None, _notes(melody) if melody is not None else None)

    def onsets(self) -> np.ndarray:
        return np.unique(np.round(self.notes[0], 6))

    @property
    def end(self) -> float:
        return float(self.notes[1].max()) if len(self.notes[1]) else 0.0

    def at(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        out = np.zeros((len(times), 4), dtype=np.int64)
        for i, t in enumerate(times):
            if self.parts is not None:
                for v, part in enumerate(self.parts):
                    here = _sounding(part, t)
                    out[i, v] = here.max() if len(here) else 0
                continue
            here = sorted(_sounding(self.notes, t).tolist(), reverse=True)
            if self.melody is not None:
                top = _sounding(self.melody, t)
                if len(top):
                    soprano = int(top.max())
                    if soprano in here:
                        here.remove(soprano)
                    out[i, 0] = soprano
                    lower = here
                    # Alto, tenor, bass: the highest two and the lowest of what sounds under the melody.
                    if len(lower) >= 3:
                        out[i, 1:] = [lower[0], lower[1], lower[-1]]
                    elif len(lower) == 2:
                        out[i, 1], out[i, 3] = lower
                    elif len(lower) == 1:
                        out[i, 3] = lower[0]
                    continue
            if len(here) >= 4:
                out[i] = [here[0], here[1], here[2], here[-1]]
            elif len(here) == 3:
                out[i, 0], out[i, 1], out[i, 3] = here
            elif len(here) == 2:
                out[i, 0], out[i, 3] = here
            elif len(here) == 1:
                out[i, 0] = here[0]
        return out


def parallels(slices: np.ndarray) -> tuple[int, int]:
    """(consecutive fifths and octaves, chord changes) over consecutive four-voice slices."""
    count = changes = 0
    for a, b in zip(slices[:-1], slices[1:]):
        if not (a.all() and b.all()) or (a == b).all():
            continue
        changes += 1
        for i, j in combinations(range(4), 2):
            if a[i] == b[i] or a[j] == b[j]:
                continue  # one voice holds: oblique motion is never a parallel
            if (a[i] - a[j]) % 12 in _PERFECT and (a[i] - a[j]) % 12 == (b[i] - b[j]) % 12:
                count += 1
    return count, changes


def is_triad_or_seventh(pitches: Sequence[int]) -> bool:
    return frozenset(int(p) % 12 for p in pitches if p) in _CHORDS


def bass_on_beats(result: FourVoices, reference: FourVoices) -> tuple[int, int]:
    """(beats whose bass pitch class equals the reference's, beats where both basses sound)."""
    beats = np.arange(0.0, np.floor(min(result.end, reference.end) - _EPS) + 1)
    ours, theirs = result.at(beats)[:, 3], reference.at(beats)[:, 3]
    both = (ours > 0) & (theirs > 0)
    return int(((ours % 12 == theirs % 12) & both).sum()), int(both.sum())


def figures(piece: FourVoices, reference: FourVoices | None = None) -> dict:
    """The figures above for one piece, as counts (so pieces can be summed) and shares."""
    slices = piece.at(piece.onsets())
    with_soprano = slices[slices[:, 0] > 0]
    full = slices[slices.all(axis=1)]
    par, changes = parallels(slices)
    crossed = 0
    for row in slices:
        sounding = row[row > 0]
        crossed += int((np.diff(sounding) > 0).any())
    counts = {
        "slices": len(slices),
        "soprano_slices": len(with_soprano),
        "four_voice_slices": len(full),
        "parallels": par,
        "changes": changes,
        "crossed_slices": crossed,
        "chord_slices": sum(is_triad_or_seventh(row) for row in full),
    }
    if reference is not None:
        counts["bass_equal"], counts["beats"] = bass_on_beats(piece, reference)
    return {**counts, **shares(counts)}


def shares(counts: dict) -> dict:
    """Shares from summed counts: the figures of one piece or of many together."""

    def ratio(a: str, b: str) -> float:
        return round(counts[a] / counts[b], 4) if counts.get(b) else 0.0

    out = {
        "four_voices": ratio("four_voice_slices", "soprano_slices"),
        "parallels_per_change": ratio("parallels", "changes"),
        "crossings": ratio("crossed_slices", "slices"),
        "triads_or_sevenths": ratio("chord_slices", "four_voice_slices"),
    }
    if "beats" in counts:
        out["bass_on_beats"] = ratio("bass_equal", "beats")
    return out


def total(pieces: Sequence[dict]) -> dict:
    """The figures of many pieces together: counts summed, shares from the sums."""
    keys = [k for k in pieces[0] if isinstance(pieces[0][k], int)] if pieces else []
    counts = {k: sum(p.get(k, 0) for p in pieces) for k in keys}
    return {**counts, **shares(counts)}
