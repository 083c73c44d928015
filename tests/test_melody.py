"""The melody of a MIDI file: its top line, kept note for note, moved by octaves, refused when unusable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.errors import BadSeed
from bot.music.events import Event
from bot.music.melody import (
    MAX_MELODY_NOTES,
    SOPRANO_HIGH,
    SOPRANO_LOW,
    BadMelody,
    Melody,
    bar_list,
    melody_from_events,
    moved_text,
    read_melody,
    top_line,
)
from bot.music.midi_out import midi_bytes

pytestmark = pytest.mark.timeout(60)


def line(melody) -> list[tuple[float, float, int]]:
    return [(n.onset, n.duration, n.pitches[0]) for n in melody.notes]


def test_a_single_line_is_kept_note_for_note() -> None:
    notes = [Event(0.0, 1.0, (67,)), Event(1.0, 0.5, (69,)), Event(1.5, 0.5, (71,)), Event(3.0, 2.0, (72,))]
    m = read_melody(midi_bytes(notes, tempo=90), "tune")
    assert line(m) == [(0.0, 1.0, 67), (1.0, 0.5, 69), (1.5, 0.5, 71), (3.0, 2.0, 72)]
    assert m.octaves == 0 and round(m.tempo) == 90 and m.name == "tune"


def test_the_highest_voice_is_taken_from_chords() -> None:
    chords = [Event(float(i), 1.0, (48, 60 + i, 64 + i, 67 + i)) for i in range(4)]
    assert line(read_melody(midi_bytes(chords))) == [(float(i), 1.0, 67 + i) for i in range(4)]


def test_a_note_is_cut_where_a_higher_one_starts() -> None:
    events = [
        Event(0.0, 4.0, (64,)),  # held under a higher entry: cut at beat 1
        Event(1.0, 1.0, (72,)),
        Event(1.5, 2.0, (60,)),  # starts under a sounding note: an inner voice
        Event(2.0, 1.0, (71,)),
    ]
    assert top_line(events) == [
        Event(0.0, 1.0, (64,)),
        Event(1.0, 1.0, (72,)),
        Event(2.0, 1.0, (71,)),
    ]


def test_drums_are_ignored() -> None:
    import test_midi as tm

    data = tm.smf([tm.melody(8, first=67), b"".join(tm.note(36, 48, channel=9) for _ in range(16))])
    m = read_melody(data)
    assert len(m.notes) == 8 and all(p < 100 for p in m.pitches)


def test_a_low_line_moves_up_by_whole_octaves() -> None:
    notes = [Event(float(i), 1.0, (43 + (i % 5),)) for i in range(12)]
    m = read_melody(midi_bytes(notes))
    assert m.octaves == 2
    assert line(m) == [(float(i), 1.0, 43 + (i % 5) + 24) for i in range(12)]
    assert all(SOPRANO_LOW <= p <= SOPRANO_HIGH for p in m.pitches)


def test_leading_empty_bars_are_dropped_keeping_the_bar_position() -> None:
    notes = [Event(9.0, 1.0, (67,)), Event(10.0, 1.0, (69,))]
    assert line(read_melody(midi_bytes(notes))) == [(1.0, 1.0, 67), (2.0, 1.0, 69)]


def test_too_many_notes_is_refused_saying_the_limit() -> None:
    notes = [Event(i * 0.5, 0.5, (60 + i % 12,)) for i in range(MAX_MELODY_NOTES + 1)]
    with pytest.raises(BadMelody, match=f"at most {MAX_MELODY_NOTES}"):
        read_melody(midi_bytes(notes))
    assert len(read_melody(midi_bytes(notes[:MAX_MELODY_NOTES])).notes) == MAX_MELODY_NOTES


# A 39-semitone line in four two-bar phrases: low, middle, a climb to a high climax, a close (a game
# theme's top line is like this). Each phrase ends a little early, so the phrases breathe.
PHRASES = [
    [52, 55, 57, 59, 60, 62, 60, 57],
    [64, 65, 67, 69, 71, 72, 74, 72],
    [77, 79, 81, 83, 84, 86, 88, 89, 91],
    [72, 71, 69, 67, 65, 64, 62, 60],
]


def wide_tune() -> list[Event]:
    notes, t = [], 0.0
    for phrase in PHRASES:
        step = 8.0 / len(phrase)
        for i, p in enumerate(phrase):
            notes.append(Event(t, step * (0.75 if i == len(phrase) - 1 else 1.0), (p,)))
            t += step
    return notes


def test_a_line_wider_than_the_range_is_folded_phrase_by_phrase() -> None:
    m = read_melody(midi_bytes(wide_tune()), "theme")
    source = [n.pitches[0] for n in m.source]
    folded = m.pitches
    assert max(source) - min(source) == 39
    assert len(folded) == len(source) and [n.onset for n in m.notes] == [n.onset for n in m.source]
    assert all(SOPRANO_LOW <= p <= SOPRANO_HIGH for p in folded)
    assert [p % 12 for p in folded] == [p % 12 for p in source]
    # Whole phrases moved, the low first one up and the climax down; the others stay where they were.
    assert m.octaves == 0
    assert m.moved == {**dict.fromkeys(range(8), 1), **dict.fromkeys(range(16, 25), -1)}
    # Inside a phrase every interval is the tune's own; where a phrase was cut loose, no leap wider than
    # a fifth was made.
    for i in range(1, len(source)):
        before, after = source[i] - source[i - 1], folded[i] - folded[i - 1]
        if m.moved.get(i, 0) == m.moved.get(i - 1, 0):
            assert after == before
        else:
            assert abs(after) <= max(abs(before), 7)
    assert (
        moved_text(m.notes, m.moved) == "17 notes moved by an octave to fit a soprano's range: bars 1-2, 5-6"
    )


def test_one_high_note_moves_alone_when_the_leaps_around_it_shrink() -> None:
    pitches = [67, 69, 71, 72, 74, 72, 71, 69, 67, 64, 84, 65, 67, 69, 67]  # an octave-and-a-half leap
    m = melody_from_events([Event(float(i), 1.0, (p,)) for i, p in enumerate(pitches)])
    assert m.moved == {10: -1} and m.pitches[10] == 72
    assert moved_text(m.notes, m.moved) == "1 note moved by an octave to fit a soprano's range: bar 3"


def test_a_line_inside_the_range_moves_no_note_alone() -> None:
    m = melody_from_events([Event(float(i), 1.0, (60 + i,)) for i in range(22)])  # C4-A5: exactly the range
    assert m.moved == {} and m.pitches == list(range(60, 82)) and moved_text(m.notes, m.moved) == ""


def test_moved_bars_are_listed_as_runs() -> None:
    assert bar_list([9, 3, 4]) == "bars 3-4, 9"
    assert bar_list([2]) == "bar 2" and bar_list([5, 6]) == "bars 5-6"


@pytest.mark.parametrize(
    "data,words",
    [
        (b"", "empty"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00", "no notes"),
    ],
)
def test_unusable_files_say_melody(data: bytes, words: str) -> None:
    with pytest.raises(BadMelody) as err:
        read_melody(data)
    assert words in str(err.value) and "melody" in str(err.value) and "\n" not in str(err.value)


def hostile_melodies() -> Iterator[tuple[str, Melody]]:
    """The hostile seeds of test_compose that read as a melody, by name; those refused must be refused in
    one line."""
    from test_compose import hostile_seeds

    for name, data in hostile_seeds().items():
        try:
            melody = read_melody(data, name)
        except BadSeed as e:
            assert str(e) and "\n" not in str(e), name
            continue
        yield name, melody


def test_hostile_files_give_a_line_or_one_error() -> None:
    for name, m in hostile_melodies():
        assert 0 < len(m.notes) <= MAX_MELODY_NOTES, name
        ends = [n.onset + n.duration for n in m.notes]
        assert all(a <= b.onset + 1e-9 for a, b in zip(ends, m.notes[1:])), name  # never two at once
        assert max(m.pitches) - min(m.pitches) <= 36, name
