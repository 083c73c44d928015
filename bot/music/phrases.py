"""Phrases and returns as a listener hears them: cadences that close a phrase on a beat, and material
that comes back. Counted on `bot.music.analysis`'s reading, with the cadence rules of `bot.music.stats`.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.music.analysis import TICKS, harmonies, is_tonic_triad, leads_to, melody, moments
from bot.music.events import Event
from bot.music.keys import estimate_key
from bot.music.meter import Meter
from bot.music.stats import ARRIVAL_BEATS, KEY_WINDOW, passages, repeats_early

ON_BEAT = TICKS // 40  # an arrival within 1/40 of a beat of a whole beat is on it


def phrase_cadences(events: Sequence[Event]) -> list[float]:
    """Times of the cadences that close a phrase inside the piece: V, V7 or IV/iv into a root-position
    tonic triad (of the whole piece's key or the local one, as `stats.cadences` counts them) that arrives
    on a beat and is held at least a beat, other than the piece's last harmony.

    A piece carries no bar lines here, so a strong beat is a whole beat of the piece's own clock: an
    arrival on an off-beat (a syncopated or displaced resolution) does not close a phrase.
    """
    events = [e for e in events if e.pitches]
    ms = moments(events)
    if not ms:
        return []
    end = max(e.onset + e.duration for e in events)
    key = estimate_key(events, min_fit=None)
    hs = harmonies(ms, end)
    out = []
    for x, y in zip(hs, hs[1:-1]):
        if y.end - y.start < ARRIVAL_BEATS:
            continue
        ticks = round(y.start * TICKS)
        if min(ticks % TICKS, TICKS - ticks % TICKS) > ON_BEAT:
            continue
        local = estimate_key(events, y.start - KEY_WINDOW, y.start + 2, min_fit=None)
        keys = {k for k in (key, local) if k is not None}
        if any(is_tonic_triad(y.chord, k) and leads_to(x.chord, k.tonic) for k in keys):
            out.append(y.start)
    return out


def phrase_cadences_per_16_beats(events: Sequence[Event]) -> float | None:
    """`phrase_cadences` per 16 beats of the piece; None for an empty piece."""
    events = [e for e in events if e.pitches]
    if not events:
        return None
    length = max(e.onset + e.duration for e in events) - min(e.onset for e in events)
    return len(phrase_cadences(events)) * 16 / length if length > 0 else None


def passage_returns(events: Sequence[Event]) -> bool:
    """Whether a passage of 8 onsets of the tune comes back within 64 beats (`stats.repeats_early`)."""
    return repeats_early(moments([e for e in events if e.pitches]))


def repeated_bars(events: Sequence[Event], meter: Meter | None = None) -> float | None:
    """The share of bars (those that start a note) that start the same notes at the same places in the
    bar as an earlier bar: a tune's strain played again, a phrase that comes back. Bars are counted from
    the meter's downbeats (4/4 from time 0 without one); None for a piece without notes."""
    meter = meter or Meter()
    bars: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for e in sorted((e for e in events if e.pitches), key=lambda e: (e.onset, e.pitches)):
        start = meter.bar_start(e.onset)
        bars.setdefault(round(start / meter.bar), []).append((round((e.onset - start) * TICKS), e.pitches))
    if not bars:
        return None
    seen: set[tuple] = set()
    again = 0
    for b in sorted(bars):
        notes = tuple(bars[b])
        again += notes in seen
        seen.add(notes)
    return again / len(bars)


def seed_passage_returns(seed: Sequence[Event], later: Sequence[Event]) -> bool:
    """Whether a passage of 8 notes of the seed's tune comes back, note for note, in `later`."""

    def tune(events: Sequence[Event]) -> set[tuple]:
        return set(passages(melody(moments([e for e in events if e.pitches]))))

    return not tune(seed).isdisjoint(tune(later))
