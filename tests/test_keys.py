"""Keys: the option, estimating a key (a seed's, a listener's), and music moved to C major / A minor and back."""

from __future__ import annotations

import numpy as np
import pytest

from bot.errors import BadOption
from bot.music.events import Event, transpose
from bot.music.keys import MIN_FIT, Key, draw_key, estimate_key, fifths_distance, key_fit, key_profile
from bot.options import KEYS, Options, parse_key

E_MINOR = [64, 66, 67, 69, 71, 72, 74, 75, 76, 71, 67, 64, 63, 64]  # E minor with its leading tone


def melody(pitches, step=0.5):
    return [Event(i * step, step, (p,)) for i, p in enumerate(pitches)]


def test_the_24_keys_are_the_choices():
    assert len(KEYS) == 24 and len(set(KEYS)) == 24
    assert {k.split()[1] for k in KEYS} == {"major", "minor"}
    assert {Key.parse(k).tonic for k in KEYS if k.endswith("major")} == set(range(12))
    assert {Key.parse(k).tonic for k in KEYS if k.endswith("minor")} == set(range(12))


@pytest.mark.parametrize(
    "text,key",
    [
        ("E minor", "E minor"),
        ("e MINOR", "E minor"),
        ("Eb major", "Eb major"),
        ("D# major", "Eb major"),
        ("E- major", "Eb major"),
        ("F#m", "F# minor"),
        ("Am", "A minor"),
        ("bb min", "Bb minor"),
        ("G", "G major"),
        ("B♭ major", "Bb major"),
    ],
)
def test_keys_are_read_as_a_musician_writes_them(text, key):
    assert parse_key(text) == key and key in KEYS


@pytest.mark.parametrize("text", ["H major", "E dorian", "", "C major minor", "Cbbb major", "x" * 500])
def test_a_key_that_is_not_a_choice_is_one_line_error(text):
    with pytest.raises(BadOption) as err:
        parse_key(text)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_options_check_the_key():
    assert Options(key="E minor").check().key == "E minor"
    assert Options().check().key is None
    with pytest.raises(BadOption):
        Options(key="E minr").check()


def test_estimate_key_of_scales_and_transpositions():
    assert estimate_key(melody([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])).name == "C major"
    assert estimate_key(melody(E_MINOR)).name == "E minor"
    for k in range(-6, 6):
        key = estimate_key(transpose(melody(E_MINOR), k))
        assert key.mode == "minor" and key.tonic == (4 + k) % 12


def test_no_key_from_one_repeated_note_or_a_twelve_tone_row():
    assert estimate_key(melody([60] * 30)) is None
    assert estimate_key(melody([60, 67] * 10)) is None
    assert estimate_key(melody([60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71] * 3)) is None
    assert estimate_key([]) is None


def test_moving_to_the_reference_key_and_back():
    for name in KEYS:
        key = Key.parse(name)
        k = key.to_reference()
        assert -6 <= k <= 5
        assert (key.tonic + k) % 12 == (0 if key.mode == "major" else 9)
    moved = transpose(melody(E_MINOR), Key.parse("E minor").to_reference())
    assert estimate_key(moved).name == "A minor"


def test_drawn_keys_follow_the_counts_and_the_rng_seed():
    counts = {"G major": 90, "E minor": 10}
    draws = [draw_key(counts, s).name for s in range(400)]
    assert set(draws) == {"G major", "E minor"} and 300 < draws.count("G major") < 395
    assert [draw_key(counts, s) for s in range(20)] == [draw_key(counts, s) for s in range(20)]
    assert {draw_key({}, s).name for s in range(300)} <= set(KEYS)


def test_key_estimates_of_a_scale_and_a_minor_line():
    c, d, e, f, g, a, b = 60, 62, 64, 65, 67, 69, 71
    assert estimate_key(melody([c, d, e, f, g, a, b, c + 12, g, e, c], step=1.0)).name == "C major"
    assert estimate_key(melody([a - 12, b - 12, c, d, e, f, 68, a, e, c, a - 12], step=1.0)).name == "A minor"
    assert estimate_key(melody([c, c, c])) is None


def test_circle_of_fifths():
    c_major = Key(0, "major")
    assert fifths_distance(c_major, Key(7, "major")) == 1  # C - G
    assert fifths_distance(c_major, Key(9, "minor")) == 0  # C - A minor
    assert fifths_distance(c_major, Key(4, "minor")) == 1  # C - E minor (relative of G)
    assert fifths_distance(c_major, Key(6, "major")) == 6
    assert fifths_distance(Key(11, "major"), Key(1, "major")) == 2  # B - C#, across the wrap


def test_the_fit_threshold_is_an_option():
    """Notes that fit every key badly are no key for a seed, but a listener still hears the nearest one."""
    rng = np.random.default_rng(3)
    noise = melody(list(rng.integers(48, 84, 200)))
    fit = key_fit(noise)
    assert fit is not None and fit[1] < MIN_FIT
    assert estimate_key(noise) is None
    assert estimate_key(noise, min_fit=None) == fit[0]
    # A window of the notes: only the part inside [start, end) counts.
    scale = melody([60, 62, 64, 65, 67, 69, 71, 72]) + melody(E_MINOR * 2, step=0.5)
    assert estimate_key(scale, 0, 4).name == "C major" and estimate_key(scale, 4, 20).name == "E minor"


def test_the_profiles_the_sampler_reads_name_the_same_key():
    """The compiled loop chooses a mode by dot products with `key_profile`; they rank keys as `key_fit` does."""
    events = melody(E_MINOR)
    key, r = key_fit(events)
    hist = np.zeros(12)
    for ev in events:
        hist[ev.pitches[0] % 12] += ev.duration
    z = (hist - hist.mean()) / hist.std()
    scores = {(t, m): float(key_profile(Key(t, m)) @ z) for t in range(12) for m in ("major", "minor")}
    assert max(scores, key=scores.get) == (key.tonic, key.mode)
    assert scores[(key.tonic, key.mode)] / 12 == pytest.approx(r)
