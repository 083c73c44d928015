"""Musical statistics of one piece and of many, for `etude eval`'s table: what a listener hears, in numbers.

Each statistic is counted on the reading of `bot.music.analysis`, whose docstring defines the words used
here (note, onset, sounding, voices, key, chord, harmony, cadence). A piece's statistics
(`piece_statistics`) are summarised over many pieces (`summarize`: a median and 5th-95th percentiles, or
a share of pieces) and compared with the validation pieces' (`distance`); `bot.cards` writes them into the
model card.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.music.analysis import (
    TICKS,
    Moment,
    chord_of,
    harmonies,
    is_tonic_triad,
    leads_to,
    melody,
    moments,
)
from bot.music.events import Event
from bot.music.keys import estimate_key

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor

# Duration classes in beats, from a sixteenth to a breve; a note counts in the nearest one (log scale).
DURATION_CLASSES = (0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)

KEY_WINDOW, KEY_HOP = 8.0, 4.0  # beats: keys are estimated over two 4/4 bars, moving a bar at a time
REPEAT_ONSETS, REPEAT_BEATS = 8, 64.0
ARRIVAL_BEATS = 1.0  # a cadence inside a piece arrives on a chord held at least a beat


# -- the statistics ----------------------------------------------------------------------------------------
def pitch_class_entropy(events: Sequence[Event]) -> float | None:
    """Shannon entropy in bits of the pitch classes of all notes, each note counted once.

    0 for a piece on one pitch class, log2(7) = 2.81 for notes spread evenly over one diatonic scale,
    log2(12) = 3.58 (the most) for all twelve equally often, as a chromatic scale has them.
    """
    counts = np.bincount([p % 12 for e in events for p in e.pitches], minlength=12).astype(float)
    if not counts.sum():
        return None
    q = counts[counts > 0] / counts.sum()
    return float(-(q * np.log2(q)).sum())


def scale_consistency(events: Sequence[Event]) -> float | None:
    """Share of notes inside the major or natural-minor scale that holds the most of them.

    As defined by MusPy: 1.0 when every note lies in one scale. (A natural minor scale holds the same
    notes as its relative major, so in effect this is the best of the twelve diatonic collections; the
    raised leading note of a minor key counts as outside.)
    """
    counts = np.bincount([p % 12 for e in events for p in e.pitches], minlength=12)
    total = counts.sum()
    if not total:
        return None
    best = max(
        sum(counts[(t + i) % 12] for i in scale) for t in range(12) for scale in (MAJOR_SCALE, MINOR_SCALE)
    )
    return float(best / total)


def key_changes_per_16_beats(events: Sequence[Event]) -> float | None:
    """How often the local key changes: a key is estimated for every 8-beat window, windows starting
    every 4 beats; each window whose key differs from the previous window's is one change. Reported per
    16 beats of music; None for a piece shorter than 12 beats."""
    if not events:
        return None
    start = min(e.onset for e in events)
    end = max(e.onset + e.duration for e in events)
    keys = []
    s = start
    while s + KEY_WINDOW <= end + 1e-9:
        k = estimate_key(events, s, s + KEY_WINDOW, min_fit=None)
        if k is not None:
            keys.append(k)
        s += KEY_HOP
    if len(keys) < 2:
        return None
    changes = sum(a != b for a, b in zip(keys, keys[1:]))
    return changes / ((len(keys) - 1) * KEY_HOP / 16)


def parallel_perfects_per_change(ms: Sequence[Moment]) -> float | None:
    """Parallel fifths and octaves per chord change.

    Successive onsets that sound different pitches but the same number of them (at least two) are read
    as voices ranked from the top. Each pair of voices that forms a perfect fifth or an octave (modulo
    the octave, so a twelfth or a fifteenth counts too) on both onsets, with both voices moving in the
    same direction to new pitch classes, is one parallel. The count is divided by the number of such
    comparable chord changes; None when there is none.
    """
    changes = parallels = 0
    for a, b in zip(ms, ms[1:]):
        if a.sounding == b.sounding or len(a.sounding) != len(b.sounding) or len(a.sounding) < 2:
            continue
        changes += 1
        va, vb = a.sounding[::-1], b.sounding[::-1]  # soprano first
        n = len(va)
        for i in range(n):
            for j in range(i + 1, n):
                before, after = (va[i] - va[j]) % 12, (vb[i] - vb[j]) % 12
                if before != after or before not in (0, 7):
                    continue
                up, down = vb[i] - va[i], vb[j] - va[j]
                if up * down > 0 and va[i] % 12 != vb[i] % 12:
                    parallels += 1
    return parallels / changes if changes else None


def soprano_steps(ms: Sequence[Moment]) -> float | None:
    """Share of the top voice's moves that are steps (at most 2 semitones).

    The top voice is the highest sounding pitch at each onset; a move is a change of that pitch from one
    onset to the next (a held or repeated note is no move). None when the top voice never moves.
    """
    top = [m.sounding[-1] for m in ms if m.sounding]
    moves = [abs(b - a) for a, b in zip(top, top[1:]) if b != a]
    return sum(d <= 2 for d in moves) / len(moves) if moves else None


def notes_per_onset(ms: Sequence[Moment]) -> float | None:
    """Mean number of notes that start at each onset (1 for a melody, 4 for block chords in four parts)."""
    return sum(len(m.attacks) for m in ms) / len(ms) if ms else None


def duration_histogram(events: Sequence[Event]) -> np.ndarray:
    """Share of notes in each of `DURATION_CLASSES`, each note in the nearest class on a log scale."""
    centres = np.log2(DURATION_CLASSES)
    durs = np.array([e.duration for e in events for _ in e.pitches], dtype=float)
    if not len(durs):
        return np.zeros(len(centres))
    idx = np.abs(np.log2(np.maximum(durs, 1e-3))[:, None] - centres[None, :]).argmin(1)
    hist = np.bincount(idx, minlength=len(centres)).astype(float)
    return hist / hist.sum()


def histogram_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance: half the summed absolute difference, 0 (same) to 1 (disjoint)."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def cadences(events: Sequence[Event], ms: Sequence[Moment] | None = None) -> tuple[int, bool, float]:
    """(cadences inside the piece, whether it ends with one, its length in beats).

    Inside the piece, a cadence counts when it arrives on a chord held at least a beat, other than the
    last harmony, in the key of the whole piece or in the local key (of the 8 beats before the arrival
    and the 2 after), so a cadence in the dominant or the relative key counts too. The piece ends with a
    cadence when its last onset sounds the root-position tonic triad of its key and the harmony before
    it leads there from V, V7 or IV/iv; its key is the whole piece's or that of its last 16 beats, as
    a chorale may close in another key than the one it spends most time in (70% of the chorales end on
    the tonic of the whole piece's estimated key, 84% on that or the key of their last 16 beats).
    """
    ms = moments(events) if ms is None else ms
    if not ms:
        return 0, False, 0.0
    end = max(e.onset + e.duration for e in events)
    length = end - ms[0].time
    key = estimate_key(events, min_fit=None)
    hs = harmonies(ms, end)
    inside = 0
    for x, y in zip(hs, hs[1:-1]):
        if y.end - y.start < ARRIVAL_BEATS:
            continue
        local = estimate_key(events, y.start - KEY_WINDOW, y.start + 2, min_fit=None)
        keys = {k for k in (key, local) if k is not None}
        if any(is_tonic_triad(y.chord, k) and leads_to(x.chord, k.tonic) for k in keys):
            inside += 1
    ends = False
    last = chord_of(ms[-1].sounding)
    if last is not None and len(hs) >= 2:
        # The last onset fits a chord, so it is part of the last harmony; the one before leads into it.
        keys = {k for k in (key, estimate_key(events, end - 16, end, min_fit=None)) if k is not None}
        ends = any(is_tonic_triad(last, k) and leads_to(hs[-2].chord, k.tonic) for k in keys)
    return inside, ends, length


def repeats_early(ms: Sequence[Moment]) -> bool:
    """Whether a passage of 8 melody notes comes back within the first 64 beats.

    A passage is 8 successive notes of the top voice: their pitches and the time between them. It comes
    back when the same passage starts again after the first one has ended, both inside the first 64
    beats. Exact pitches: a transposed repeat does not count. The tune, not the whole texture, because
    Bach harmonises a repeated phrase anew: the tune returns in about a third of the chorales, all four
    voices exactly in one in twenty.
    """
    if not ms:
        return False
    t0 = ms[0].time
    tune = [(t, p) for t, p in melody(ms) if t - t0 < REPEAT_BEATS]
    seen: dict[tuple, int] = {}
    for i, gram in enumerate(passages(tune)):
        first = seen.setdefault(gram, i)
        if i - first >= REPEAT_ONSETS:
            return True
    return False


def passages(tune: Sequence[tuple[float, int]], n: int = REPEAT_ONSETS) -> list[tuple]:
    """Each passage of `n` successive notes of a tune ((time, pitch) pairs, `analysis.melody`), in order:
    its first pitch, then each next note's time after the one before (in ticks) and pitch."""
    return [
        (tune[i][1],)
        + tuple((round((tune[k][0] - tune[k - 1][0]) * TICKS), tune[k][1]) for k in range(i + 1, i + n))
        for i in range(len(tune) - n + 1)
    ]


# -- one piece, many pieces --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Statistic:
    """How a statistic is shown: its key, what a listener hears, and whether it is a share of pieces."""

    key: str
    label: str
    share: bool = False  # a yes/no per piece, summarised as the share of pieces; else by the median
    digits: int = 2


STATISTICS: tuple[Statistic, ...] = (
    Statistic("pitch_class_entropy", "pitch-class entropy (bits)"),
    Statistic("scale_consistency", "share of notes inside one scale", digits=3),
    Statistic("key_changes_per_16_beats", "key changes per 16 beats"),
    Statistic("parallels_per_change", "parallel fifths/octaves per chord change", digits=3),
    Statistic("soprano_steps", "soprano moves by step"),
    Statistic("notes_per_onset", "notes per onset"),
    Statistic("duration_distance", "duration histogram distance to the training pieces"),
    Statistic("cadences_per_16_beats", "cadences inside the piece per 16 beats"),
    Statistic("ends_with_cadence", "ends with a cadence onto the tonic", share=True),
    Statistic("repeats_early", "8 notes of the tune come back within 64 beats", share=True),
)


def piece_statistics(events: Sequence[Event], reference_durations: np.ndarray | None = None) -> dict:
    """Every statistic of one piece; a value is None when the piece cannot show it (a melody has no
    parallel fifths to count). `reference_durations` is the duration histogram to measure against."""
    events = [e for e in events if e.pitches]
    ms = moments(events)
    inside, ends, length = cadences(events, ms)
    return {
        "pitch_class_entropy": pitch_class_entropy(events),
        "scale_consistency": scale_consistency(events),
        "key_changes_per_16_beats": key_changes_per_16_beats(events),
        "parallels_per_change": parallel_perfects_per_change(ms),
        "soprano_steps": soprano_steps(ms),
        "notes_per_onset": notes_per_onset(ms),
        "duration_distance": None
        if reference_durations is None or not events
        else histogram_distance(duration_histogram(events), reference_durations),
        "cadences_per_16_beats": inside * 16 / length if length > 0 else None,
        "ends_with_cadence": ends,
        "repeats_early": repeats_early(ms),
        "onsets": len(ms),
        "key": (k.name if (k := estimate_key(events, min_fit=None)) else None),
    }


def pooled_duration_histogram(pieces: Sequence[Sequence[Event]]) -> np.ndarray:
    """The duration histogram of all the notes of `pieces` together."""
    return duration_histogram([e for events in pieces for e in events])


def summarize(per_piece: Sequence[dict]) -> dict:
    """Per statistic: the median and 5th-95th percentiles over pieces, or the share of pieces (yes/no)."""
    out = {}
    for s in STATISTICS:
        values = [p[s.key] for p in per_piece if p.get(s.key) is not None]
        if not values:
            out[s.key] = {"n": 0}
        elif s.share:
            out[s.key] = {"share": round(float(np.mean(values)), 4), "n": len(values)}
        else:
            v = np.array(values, dtype=float)
            out[s.key] = {
                "median": round(float(np.median(v)), 4),
                "p5": round(float(np.percentile(v, 5)), 4),
                "p95": round(float(np.percentile(v, 95)), 4),
                "n": len(values),
            }
    return out


def centre(summary: dict) -> float | None:
    """The figure a statistic is judged by: its median, or its share of pieces."""
    return summary.get("share", summary.get("median"))


def distance(generated: dict, reference: dict) -> float:
    """One number for how far generated pieces are from the reference pieces, 0 when they agree.

    Each statistic's median (or share) is compared with the reference's and scaled by the reference's
    own spread: the 5th-95th percentile range for a median, 1 for a share. The mean over the statistics
    both sides have is the score, so a distance of 1 means a typical statistic is off by a whole
    reference range.
    """
    gaps = []
    for s in STATISTICS:
        g, r = centre(generated.get(s.key, {})), centre(reference.get(s.key, {}))
        if g is None or r is None:
            continue
        if s.share:
            gaps.append(abs(g - r))
        else:
            spread = reference[s.key]["p95"] - reference[s.key]["p5"]
            gaps.append(abs(g - r) / max(spread, 1e-3))
    return round(float(np.mean(gaps)), 4) if gaps else math.nan


def fmt(stat: Statistic, summary: dict, spread: bool = True) -> str:
    """A summary as a table cell: `52%`, or `2.94 [2.71, 3.14]` (median [5th, 95th percentile])."""
    if not summary.get("n"):
        return "—"
    if stat.share:
        return f"{summary['share'] * 100:.0f}%"
    d = stat.digits
    text = f"{summary['median']:.{d}f}"
    return f"{text} [{summary['p5']:.{d}f}, {summary['p95']:.{d}f}]" if spread else text


# -- lines for eval's table and the model card -------------------------------------------------------------
def key_fidelity_line(source: str, key: dict) -> str:
    """One line on seed key fidelity, as `etude eval` measures it on `source`."""
    share, own = key["share_within_one_fifth"], key["own_continuation"]
    if share is None or own is None:
        return f"seed key fidelity ({source}): no seeds with a key"
    return (
        f"seed key fidelity ({source}): {share * 100:.0f}% of {key['seeds']} seeds continue within one "
        f"fifth of their key (the pieces' own continuations: {own * 100:.0f}%)"
    )
