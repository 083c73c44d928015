"""Events <-> frames: pitches with their octave, onsets, durations and phrase ends survive a round trip."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest

from bot.music.encoding import MAX_SHIFT, PIANO_HIGH, PIANO_LOW, Vocabulary
from bot.music.events import GRID, Event, group_notes, normalize, transpose
from bot.music.midi import read_midi


def as_tuples(events):
    return sorted((e.onset, e.duration, e.pitches, e.fermata) for e in events)


def test_round_trip_on_real_chorales(chorales):
    vocab = Vocabulary.fit(chorales)
    notes = kept = 0
    for piece in chorales:
        ids = vocab.encode(piece.events)
        assert ids[0] == vocab.start and ids[-1] == vocab.end
        assert vocab.count_onsets(ids) == len({e.onset for e in piece.events})
        assert as_tuples(vocab.decode(ids)) == as_tuples(normalize(piece.events)), piece.name
        notes += sum(len(e.pitches) for e in piece.events)
        kept += sum(len(e.pitches) for e in normalize(piece.events))
    # Only unisons (two voices on one pitch at once) merge: they are rare in the chorales.
    assert kept / notes > 0.98
    assert any(e.fermata for p in chorales for e in p.events)  # the phrase ends were read


def test_a_held_note_is_seen_at_every_frame_it_sounds_through():
    # A whole-note soprano over a moving alto: the alto's frames hold the soprano.
    events = [Event(0.0, 4.0, (72,))] + [Event(float(i), 1.0, (64 + i,)) for i in range(4)]
    vocab = Vocabulary()
    ids = vocab.encode(events)
    assert ids.count(vocab.hold_id(72)) == 3 and ids.count(vocab.pitch_id(72)) == 1
    assert as_tuples(vocab.decode(ids)) == as_tuples(normalize(events))


def test_round_trip_keeps_octaves_chords_rests_and_triplets():
    third = 1 / 3
    events = [
        Event(0.0, 1.0, (36, 48, 60, 72)),  # four Cs, an octave apart: the tutorial kept one pitch class
        Event(1.0, 0.5, (61,)),
        Event(1.5, 0.25, (62,)),
        Event(1.5, 2.0, (50, 57)),  # same onset, other duration
        Event(4.0, third, (64,), fermata=True),  # eighth-note triplets
        Event(4.0 + third, third, (65,)),
        Event(4.0 + 2 * third, third, (67,)),
        Event(5.0, 1 / 6, (69,)),  # a sixteenth triplet
        Event(12.0, 3.0, (64, 67, 71)),  # a rest longer than the longest shift
        Event(15.0, 1.0, (PIANO_LOW, PIANO_HIGH)),  # the whole piano
    ]
    vocab = Vocabulary()
    ids = vocab.encode(events)
    assert as_tuples(vocab.decode(ids)) == as_tuples(normalize(events))
    assert normalize(events) and all(e.duration > 0 for e in vocab.decode(ids))
    assert vocab.index[f"S{MAX_SHIFT}"] in ids


def test_unison_keeps_the_longer_note_and_a_reattack_cuts_the_earlier():
    events = [Event(0.0, 2.0, (60,)), Event(0.0, 1.0, (60,)), Event(1.0, 2.0, (60,))]
    assert as_tuples(normalize(events)) == [(0.0, 1.0, (60,), False), (1.0, 2.0, (60,), False)]


def _piano_midi() -> bytes:
    """Two tracks, as a notation program writes a piano piece: a right hand in triplets over a bass with
    a held pedal note, plus a third track that doubles a melody note in another octave."""
    mid = mido.MidiFile(ticks_per_beat=480)
    right, left, third = mido.MidiTrack(), mido.MidiTrack(), mido.MidiTrack()
    mid.tracks += [right, left, third]
    right.append(mido.MetaMessage("set_tempo", tempo=600_000))
    for p in [72, 74, 76, 77, 79, 81, 83, 84, 86]:
        right.append(mido.Message("note_on", note=p, velocity=90, time=0))
        right.append(mido.Message("note_off", note=p, velocity=0, time=160))
    for chord, ticks in (((48, 55, 64), 960), ((43, 50, 59), 480), ((36,), 1440)):
        for p in chord:
            left.append(mido.Message("note_on", channel=1, note=p, velocity=70, time=0))
        for j, p in enumerate(chord):
            left.append(mido.Message("note_off", channel=1, note=p, velocity=0, time=ticks if j == 0 else 0))
    third.append(mido.Message("note_on", channel=2, note=60, velocity=60, time=240))
    third.append(mido.Message("note_off", channel=2, note=60, velocity=0, time=2000))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def test_round_trip_on_a_multi_track_piano_piece():
    piece = read_midi(_piano_midi(), "piano")
    vocab = Vocabulary()
    ids = vocab.encode(piece.events)
    assert as_tuples(vocab.decode(ids)) == as_tuples(normalize(piece.events))
    assert vocab.count_onsets(ids) == len({e.onset for e in piece.events})
    # Triplet eighths (160 ticks) land on the grid exactly.
    assert {round(e.onset * GRID) % 4 for e in piece.events if 72 <= e.pitches[0]} == {0}


def test_pitches_outside_the_piano_fold_by_octaves():
    vocab = Vocabulary()
    events = vocab.decode(vocab.encode([Event(0.0, 1.0, (12, 60)), Event(1.0, 1.0, (120,))]))
    assert events[0].pitches == (24, 60) and events[1].pitches == (108,)


def test_group_notes_snaps_to_grid_and_merges_chords():
    events = group_notes([(0.0, 1.0, 60, 90), (0.01, 0.99, 64, 70), (0.0, 2.0, 48, 80, True)])
    assert [(e.onset, e.duration, e.pitches, e.fermata) for e in events] == [
        (0.0, 1.0, (60, 64), False),
        (0.0, 2.0, (48,), True),
    ]
    assert events[0].velocity == 80


def test_transpose_and_token_transposition_agree(chorales):
    vocab = Vocabulary.fit(chorales)
    events = chorales[0].events
    ids = np.array(vocab.encode(events))
    moved = np.array(vocab.encode(transpose(events, 2)))
    assert np.array_equal(vocab.transpose_ids(ids, 2), moved)


def test_grammar_accepts_real_pieces_and_rejects_disorder(chorales):
    vocab = Vocabulary.fit(chorales)
    allowed = vocab.grammar()
    for piece in chorales:
        ids = vocab.encode(piece.events, mode="major", style="chorale")
        assert all(allowed[a, b] for a, b in zip(ids, ids[1:]))
    p60, p64, h64 = vocab.pitch_id(60), vocab.pitch_id(64), vocab.hold_id(64)
    assert not allowed[p64, p60] and not allowed[h64, p60]  # pitches of a frame ascend
    assert allowed[p60, h64] and allowed[h64, vocab.close]
    assert not allowed[vocab.start, p60]  # a frame starts with its time shift
    assert not allowed[vocab.close, vocab.shift_base]  # S0 opens only the first frame
    assert not allowed[vocab.close, vocab.end]  # the last notes stop after a shift
    assert allowed[vocab.shift_base + GRID, vocab.end]


def test_trim_keeps_the_head_and_whole_frames(chorales):
    vocab = Vocabulary.fit(chorales)
    ids = vocab.encode(chorales[0].events, mode="minor", style="chorale")
    cut = vocab.trim(ids, 100)
    assert len(cut) <= 100 and cut[:3] == ids[:3] and cut[-1] == ids[-1]
    assert vocab.is_shift(cut[3]) and vocab.is_close(ids[len(ids) - len(cut) + 2])


def test_vocabulary_saves_as_json(tmp_path, chorales):
    vocab = Vocabulary.fit(chorales)
    vocab.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.tokens == vocab.tokens and again.key_counts == vocab.key_counts and vocab.key_counts


def test_a_first_encoding_vocabulary_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="encoding 1"):
        Vocabulary.from_json(
            {"grid": 12, "shifts": [0], "pitch_low": 60, "pitch_high": 72, "durations": [12]}
        )


def test_empty_data_has_no_vocabulary():
    with pytest.raises(ValueError):
        Vocabulary.fit([[]])
