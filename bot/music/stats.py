"""Musical statistics of one piece, computed on its decoded events: what a listener hears, in numbers.

Everything here reads a list of `Event`s (onset and duration in beats, MIDI pitches), so it does not
depend on how the model encodes music. The words used below:

- a *note* is one pitch of one event; its pitch class is the pitch modulo 12 (C = 0).
- an *onset* (a moment) is a time at which at least one note starts. What is *sounding* at an onset is
  every distinct pitch that has started at or before it and not yet ended (a held note sounds on).
- *voices*: at each onset the sounding pitches are ranked from the top (soprano = highest). Two
  successive onsets are compared voice by voice only when they sound the same number of pitches, as a
  chorale analysis reads four voices from four sounding pitches; a change of texture is skipped.
- a *key* is estimated with the Krumhansl-Schmuckler method: the pitch-class histogram, each note
  weighted by its duration, is correlated with the 24 rotated major and minor key profiles
  (Krumhansl & Kessler 1982); the best correlation names the key.
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
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.music.encoding import Event

TICKS = 480  # times are compared in 1/480 beats: exact for sixteenths, triplets and 32nds alike

# Krumhansl-Kessler key profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
NAMES = ["C", "C#", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B"]
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)  # natural minor

# Duration classes in beats, from a sixteenth to a breve; a note counts in the nearest one (log scale).
DURATION_CLASSES = (0.25, 1 / 3, 0.5, 2 / 3, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)

KEY_WINDOW, KEY_HOP = 8.0, 4.0  # beats: keys are estimated over two 4/4 bars, moving a bar at a time
REPEAT_ONSETS, REPEAT_BEATS = 8, 64.0
ARRIVAL_BEATS = 1.0  # a cadence inside a piece arrives on a chord held at least a beat


def _profiles() -> np.ndarray:
    rows = [np.roll(p, t) for p in (MAJOR_PROFILE, MINOR_PROFILE) for t in range(12)]
    m = np.array(rows)
    return (m - m.mean(1, keepdims=True)) / m.std(1, keepdims=True)


_Z_PROFILES = _profiles()  # rows 0-11: C..B major, 12-23: C..B minor


def key_profile(key: Key) -> np.ndarray:
    """The standardised Krumhansl-Kessler profile of `key` (mean 0, std 1): `estimate_key` picks the key
    whose profile has the largest dot product with the pitch-class histogram."""
    return _Z_PROFILES[key.tonic + 12 * key.minor]


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class
    minor: bool

    @property
    def name(self) -> str:
        return f"{NAMES[self.tonic]} {'minor' if self.minor else 'major'}"

    @property
    def fifths(self) -> int:
        """Position on the circle of fifths (C major = A minor = 0, G major = E minor = 1, ...)."""
        major_tonic = (self.tonic + 3) % 12 if self.minor else self.tonic
        return major_tonic * 7 % 12


def fifths_distance(a: Key, b: Key) -> int:
    """Steps around the circle of fifths between two keys; relative major and minor are 0 apart."""
    d = abs(a.fifths - b.fifths) % 12
    return min(d, 12 - d)


def pitch_class_weights(
    events: Sequence[Event], start: float = -math.inf, end: float = math.inf
) -> np.ndarray:
    """Duration (beats) each pitch class sounds inside [start, end)."""
    hist = np.zeros(12)
    for e in events:
        length = min(e.onset + e.duration, end) - max(e.onset, start)
        if length > 0:
            for p in e.pitches:
                hist[p % 12] += length
    return hist


def estimate_key(events: Sequence[Event], start: float = -math.inf, end: float = math.inf) -> Key | None:
    """Krumhansl-Schmuckler key of the notes inside [start, end); None when there is nothing to tell by."""
    hist = pitch_class_weights(events, start, end)
    return key_of_histogram(hist)


def key_of_histogram(hist: np.ndarray) -> Key | None:
    if np.count_nonzero(hist) < 2 or hist.std() == 0:
        return None  # one pitch class (or none) says nothing about a key
    z = (hist - hist.mean()) / hist.std()
    best = int(np.argmax(_Z_PROFILES @ z))
    return Key(best % 12, best >= 12)


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
        k = estimate_key(events, s, s + KEY_WINDOW)
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
    key = estimate_key(events)
    hs = harmonies(ms, end)
    inside = 0
    for x, y in zip(hs, hs[1:-1]):
        if y.end - y.start < ARRIVAL_BEATS:
            continue
        local = estimate_key(events, y.start - KEY_WINDOW, y.start + 2)
        keys = {k for k in (key, local) if k is not None}
        if any(is_tonic_triad(y.chord, k) and leads_to(x.chord, k.tonic) for k in keys):
            inside += 1
    ends = False
    last = chord_of(ms[-1].sounding)
    if last is not None and len(hs) >= 2:
        # The last onset fits a chord, so it is part of the last harmony; the one before leads into it.
        keys = {k for k in (key, estimate_key(events, end - 16, end)) if k is not None}
        ends = any(is_tonic_triad(last, k) and leads_to(hs[-2].chord, k.tonic) for k in keys)
    return inside, ends, length


def melody(ms: Sequence[Moment]) -> list[tuple[float, int]]:
    """The top voice's notes as (onset, pitch): the onsets where the highest sounding pitch is struck."""
    return [(m.time, m.sounding[-1]) for m in ms if m.sounding and m.sounding[-1] in m.attacks]


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
    n = REPEAT_ONSETS
    seen: dict[tuple, int] = {}
    for i in range(len(tune) - n + 1):
        gram = (tune[i][1],) + tuple(
            (round((tune[k][0] - tune[k - 1][0]) * TICKS), tune[k][1]) for k in range(i + 1, i + n)
        )
        first = seen.setdefault(gram, i)
        if i - first >= n:
            return True
    return False


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
        "key": (k.name if (k := estimate_key(events)) else None),
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


def apply(pieces: Sequence[Sequence[Event]], reference_durations: np.ndarray) -> list[dict]:
    return [piece_statistics(p, reference_durations) for p in pieces]


def fmt(stat: Statistic, summary: dict, spread: bool = True) -> str:
    """A summary as a table cell: `52%`, or `2.94 [2.71, 3.14]` (median [5th, 95th percentile])."""
    if not summary.get("n"):
        return "—"
    if stat.share:
        return f"{summary['share'] * 100:.0f}%"
    d = stat.digits
    text = f"{summary['median']:.{d}f}"
    return f"{text} [{summary['p5']:.{d}f}, {summary['p95']:.{d}f}]" if spread else text


# -- the model card's section -------------------------------------------------------------------------------
def key_fidelity_line(source: str, key: dict) -> str:
    """One line on seed key fidelity, as `etude eval` measures it on `source`."""
    share, own = key["share_within_one_fifth"], key["own_continuation"]
    if share is None or own is None:
        return f"seed key fidelity ({source}): no seeds with a key"
    return (
        f"seed key fidelity ({source}): {share * 100:.0f}% of {key['seeds']} seeds continue within one "
        f"fifth of their key (the pieces' own continuations: {own * 100:.0f}%)"
    )


def card_markdown(section: dict) -> list[str]:
    """The model card's musical section: the table, what each figure means, and key fidelity."""
    lines = [
        "## Music (samples beside the validation pieces)",
        "",
        f"{section['pieces']} pieces of {section['length']} notes sampled at temperature "
        f"{section['temperature']:g} and top-p {section['top_p']:g} (RNG seeds {section['rng_seeds'][0]}-"
        f"{section['rng_seeds'][1]}), beside the {section['reference_pieces']} validation pieces; figures "
        "are medians over pieces, [5th, 95th percentile] for the validation pieces, or a share of pieces.",
        "",
        "| what a listener hears | validation pieces | this model |",
        "| --- | --- | --- |",
    ]
    for s in STATISTICS:
        g, r = section["generated"][s.key], section["reference"][s.key]
        lines.append(f"| {s.label} | {fmt(s, r, True)} | {fmt(s, g, False)} |")
    lines += [
        "",
        f"Distance to the validation pieces: {section['distance']:.3f} (the mean gap of a statistic, in "
        "units of the validation pieces' 5th-95th percentile range; 0 when every median sits on theirs). "
        "Each statistic is defined in `bot/music/stats.py`.",
    ]
    for source, key in section.get("key_fidelity", {}).items():
        line = key_fidelity_line(source, key)
        lines += ["", line[0].upper() + line[1:] + "."]
    lines.append("")
    return lines
