"""Harmony figures: parallels, crossings, chords and the bass against a reference, on made-up and real music."""

from __future__ import annotations

import numpy as np
import pytest

from bot.music.events import Event
from bot.music.harmony import FourVoices, figures, is_triad_or_seventh, parallels, total

pytestmark = pytest.mark.timeout(120)


def chords(*rows: tuple[int, ...], length: float = 1.0) -> list[Event]:
    return [Event(i * length, length, tuple(sorted(r))) for i, r in enumerate(rows)]


def test_parallel_fifths_and_octaves_are_counted_per_change() -> None:
    slices = np.array([[72, 67, 64, 48], [74, 69, 65, 50], [74, 69, 65, 50], [76, 67, 64, 48]])
    # First change: S-B octaves and A-B fifths move up together; the repeat is no change; the last
    # change takes A and B down a tone together (fifths again) while S rises (S-B 24 -> 28: none).
    assert parallels(slices) == (3, 2)


def test_oblique_motion_and_held_voices_are_not_parallels() -> None:
    slices = np.array([[79, 72, 67, 48], [79, 74, 67, 50]])  # S and T hold
    # A-B: 72-48 = 24 (octave) -> 74-50 = 24: both move, a parallel octave.
    assert parallels(slices) == (1, 1)
    assert parallels(np.array([[79, 72, 67, 48], [81, 72, 67, 48]])) == (0, 1)


def test_chords_that_are_triads_or_sevenths() -> None:
    assert is_triad_or_seventh((72, 67, 64, 48))  # C major
    assert is_triad_or_seventh((71, 65, 62, 55))  # G7 with its fifth
    assert is_triad_or_seventh((65, 59, 55, 43))  # G7 without D: the fifth may be left out
    assert not is_triad_or_seventh((65, 64, 62, 60))  # a cluster
    assert not is_triad_or_seventh((72, 60, 48, 36))  # a bare octave


def test_melody_is_the_soprano_and_a_voice_above_it_is_a_crossing() -> None:
    melody = chords((72,), (71,), (72,))
    under = chords((48, 55, 64), (43, 62, 67), (48, 60, 76))  # the last chord puts 76 above the melody
    piece = FourVoices.from_events(melody + under, melody)
    slices = piece.at(piece.onsets())
    assert slices[:, 0].tolist() == [72, 71, 72]
    f = figures(piece)
    assert f["crossed_slices"] == 1 and f["four_voice_slices"] == 3 and f["four_voices"] == 1.0


def test_parts_can_cross_and_bass_on_beats_compares_pitch_classes() -> None:
    s, a = chords((72,), (71,)), chords((67,), (74,))  # the alto rises above the soprano
    t, b = chords((64,), (62,)), chords((48,), (43,))
    ref = FourVoices.from_parts([s, a, t, b])
    assert figures(ref)["crossed_slices"] == 1
    other = FourVoices.from_parts([s, a, t, chords((36,), (47,))])
    f = figures(other, ref)
    assert (f["bass_equal"], f["beats"], f["bass_on_beats"]) == (1, 2, 0.5)


def test_totals_sum_counts_before_dividing() -> None:
    a = {"parallels": 1, "changes": 1, "slices": 2, "soprano_slices": 2, "four_voice_slices": 2}
    b = {"parallels": 0, "changes": 9, "slices": 10, "soprano_slices": 10, "four_voice_slices": 10}
    for d in (a, b):
        d.update(crossed_slices=0, chord_slices=d["four_voice_slices"])
    assert total([a, b])["parallels_per_change"] == 0.1


def test_a_bach_chorale_reads_as_good_four_part_harmony() -> None:
    from music21 import corpus

    from bot.music.corpus import piece_from_stream

    score = corpus.parse("bach/bwv269")
    parts = [piece_from_stream(p, p.id).events for p in score.parts[:4]]
    bach = FourVoices.from_parts(parts)
    f = figures(bach, bach)
    assert f["bass_on_beats"] == 1.0 and f["four_voices"] > 0.9
    assert f["triads_or_sevenths"] > 0.6 and f["parallels_per_change"] < 0.05
    # Split by height, with the soprano part as the melody, the same chorale reads nearly the same.
    together = FourVoices.from_events([e for p in parts for e in p], parts[0])
    g = figures(together, bach)
    assert g["bass_on_beats"] > 0.9 and abs(g["triads_or_sevenths"] - f["triads_or_sevenths"]) < 0.1
