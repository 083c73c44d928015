"""Keys: the option, estimating a seed's key, and music moved to C major / A minor and back."""

from __future__ import annotations

import pytest

from bot.errors import BadOption
from bot.music.events import Event, transpose
from bot.music.keys import Key, draw_key, estimate_key
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
