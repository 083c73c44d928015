"""Events <-> tokens: pitches with their octave, onsets and durations survive a round trip."""

from __future__ import annotations

import numpy as np
import pytest

from bot.music.encoding import GRID, MAX_DURATION, MAX_SHIFT, Event, Vocabulary, group_notes, transpose


def as_tuples(events, cap=MAX_DURATION / GRID):
    return [(e.onset, min(e.duration, cap), e.pitches) for e in events]


def test_round_trip_on_corpus_pieces(chorales):
    vocab = Vocabulary.fit(p.events for p in chorales)
    for piece in chorales:
        ids = vocab.encode(piece.events)
        assert ids[0] == vocab.start
        assert vocab.count_events(ids) == len(piece.events)
        assert as_tuples(vocab.decode(ids)) == as_tuples(piece.events), piece.name


def test_round_trip_keeps_octaves_and_chords():
    events = [
        Event(0.0, 1.0, (36, 48, 60, 72)),  # four Cs, an octave apart: the tutorial kept one pitch class
        Event(1.0, 0.5, (61,)),
        Event(1.5, 0.25, (62,)),
        Event(1.5, 2.0, (50, 57)),  # same onset, other duration: a second event with no time between
        Event(12.0, 3.0, (64, 67, 71)),  # a rest longer than the longest shift
    ]
    vocab = Vocabulary.fit([events], pitch_margin=0)
    assert as_tuples(vocab.decode(vocab.encode(events))) == as_tuples(events)
    assert MAX_SHIFT in vocab.shifts


def test_unknown_values_map_to_the_nearest_known():
    vocab = Vocabulary([0, 6, 12], 60, 72, [6, 12, 24])
    ids = vocab.encode([Event(0.0, 1.1, (59, 60)), Event(0.45, 1.9, (80,))])
    events = vocab.decode(ids)
    assert events[0].pitches == (60, 71)  # 59 moves up an octave into range
    assert events[0].duration == 1.0
    assert events[1].onset == 0.5 and events[1].duration == 2.0
    assert events[1].pitches == (68,)


def test_group_notes_snaps_to_grid_and_merges_chords():
    events = group_notes([(0.0, 1.0, 60, 90), (0.01, 0.99, 64, 70), (0.0, 2.0, 48, 80)])
    assert [(e.onset, e.duration, e.pitches) for e in events] == [(0.0, 1.0, (60, 64)), (0.0, 2.0, (48,))]
    assert events[0].velocity == 80


def test_transpose_and_token_transposition_agree(chorales):
    vocab = Vocabulary.fit(p.events for p in chorales)
    events = chorales[0].events
    ids = np.array(vocab.encode(events))
    moved = np.array(vocab.encode(transpose(events, 2)))
    is_pitch = (ids >= vocab.pitch_base) & (ids < vocab.duration_base)
    assert np.array_equal(np.where(is_pitch, ids + 2, ids), moved)


def test_grammar_accepts_real_pieces_and_rejects_disorder(chorales):
    vocab = Vocabulary.fit(p.events for p in chorales)
    allowed = vocab.grammar()
    for piece in chorales:
        ids = vocab.encode(piece.events)
        assert all(allowed[a, b] for a, b in zip(ids, ids[1:]))
    p60, p64 = vocab.pitch_id(60), vocab.pitch_id(64)
    assert not allowed[p64, p60]  # pitches of a chord ascend
    assert not allowed[vocab.start, p60]  # an event starts with its time shift


def test_vocabulary_saves_as_json(tmp_path, chorales):
    vocab = Vocabulary.fit(p.events for p in chorales)
    vocab.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.tokens == vocab.tokens


def test_empty_data_has_no_vocabulary():
    with pytest.raises(ValueError):
        Vocabulary.fit([[]])
