"""Phrase cadences on the beat and returning passages, on small hand-built pieces."""

from __future__ import annotations

import pytest

from bot.music.events import Event
from bot.music.meter import Meter
from bot.music.phrases import passage_returns, phrase_cadences, phrase_cadences_per_16_beats, repeated_bars

pytestmark = pytest.mark.timeout(60)

I = (48, 55, 64, 72)  # noqa: E741 (Roman numerals name the chords)
IV = (41, 57, 65, 72)
V = (43, 55, 62, 71)
ii = (50, 57, 65, 74)


def chords(
    *voicings: tuple[int, ...], lengths: tuple[float, ...] | None = None, start: float = 0.0
) -> list[Event]:
    out, t = [], start
    for i, v in enumerate(voicings):
        d = lengths[i] if lengths else 1.0
        out.append(Event(t, d, v))
        t += d
    return out


def test_a_cadence_on_the_beat_inside_the_piece_counts() -> None:
    piece = chords(I, IV, V, I, ii, V, I, IV, V, I, lengths=(1, 1, 1, 2, 1, 1, 1, 1, 1, 2))
    # V-I into beat 3 (held two beats) and V-I into beat 7 close phrases; the last harmony does not count
    assert phrase_cadences(piece) == [3.0, 7.0]
    assert phrase_cadences_per_16_beats(piece) == pytest.approx(2 * 16 / 12)


def test_an_arrival_off_the_beat_or_too_short_does_not_close_a_phrase() -> None:
    off = chords(I, IV, V, I, ii, V, I, lengths=(1, 1, 1.5, 2, 1, 1, 2))  # the tonic arrives at 3.5
    assert phrase_cadences(off) == []
    short = chords(I, IV, V, I, ii, V, I, lengths=(1, 1, 1, 0.5, 1, 1, 2))  # held half a beat
    assert phrase_cadences(short) == []
    assert phrase_cadences_per_16_beats([]) is None


def test_a_passage_of_eight_notes_that_comes_back() -> None:
    tune = [60, 62, 64, 65, 67, 65, 64, 62]
    twice = [Event(i, 1, (p,)) for i, p in enumerate(tune + [59] + tune)]
    assert passage_returns(twice)
    varied = [Event(i, 1, (p,)) for i, p in enumerate(tune + [59] + tune[:-1] + [60])]
    assert not passage_returns(varied)
    late = [Event(i * 5, 1, (p,)) for i, p in enumerate(tune + [59] + tune)]  # returns after beat 64
    assert not passage_returns(late)


def test_a_strain_played_twice_repeats_half_its_bars() -> None:
    """Bars are read from the meter's downbeats: a 4-bar strain played twice repeats 4 of its 8 bars; a
    bar whose notes come back elsewhere in the bar, or a line read against the wrong downbeat, does not."""
    strain = [Event(b * 3 + i, 1.0, (60 + b + i,)) for b in range(4) for i in range(3)]
    twice = strain + [Event(e.onset + 12, 1.0, e.pitches) for e in strain]
    assert repeated_bars(twice, Meter(3, 4)) == pytest.approx(0.5)
    assert repeated_bars(twice, Meter(3, 4, downbeat=1.0)) == pytest.approx(3 / 9)  # the join cut in a bar
    moved = strain + [Event(e.onset + 12.5, 1.0, e.pitches) for e in strain]
    assert repeated_bars(moved, Meter(3, 4)) == 0.0
    assert repeated_bars([Event(0, 1, ())]) is None
