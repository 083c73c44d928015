"""Training data: corpus and folders, the JSON cache, the split by piece, windows and transposition."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bot.errors import BadData
from bot.music.corpus import cache_dir, encode_pieces, load_pieces, split_by_piece, transpose_windows, windows
from bot.music.encoding import Vocabulary
from bot.music.events import Piece


def test_split_is_by_piece_and_stable(chorales):
    train, val = split_by_piece(chorales)
    assert val and train
    assert not {p.name for p in train} & {p.name for p in val}
    assert len(train) + len(val) == len(chorales)
    # Adding pieces never moves a piece from one side to the other.
    more = chorales + [Piece(f"extra{i}", chorales[0].events) for i in range(30)]
    train2, val2 = split_by_piece(more)
    assert {p.name for p in val} <= {p.name for p in val2}
    assert {p.name for p in train} <= {p.name for p in train2}


def test_no_window_of_a_validation_piece_is_trained_on(chorales):
    train, val = split_by_piece(chorales)
    vocab = Vocabulary.fit(p.events for p in train)
    train_w = {w.tobytes() for w in windows(encode_pieces(train, vocab), 32)}
    val_w = {w.tobytes() for w in windows(encode_pieces(val, vocab), 32)}
    assert train_w and val_w and not train_w & val_w


def test_windows_cover_every_token(chorales):
    vocab = Vocabulary.fit(p.events for p in chorales)
    seqs = encode_pieces(chorales[:2], vocab)
    w = windows(seqs, 50)
    assert w.shape[1] == 51
    # Non-overlapping windows: every target token appears once.
    assert int((w[:, 1:] != 0).sum()) == sum(len(s) - 1 for s in seqs)


def test_transposition_keeps_attacks_and_holds_apart(chorales):
    vocab = Vocabulary.fit(chorales)
    w = windows(encode_pieces(chorales, vocab, normalize_key=False), 64)
    moved = transpose_windows(w, vocab, np.random.default_rng(1))
    attack = (w >= vocab.pitch_base) & (w < vocab.hold_base)
    hold = (w >= vocab.hold_base) & (w < vocab.close_base)
    assert np.array_equal(moved[~(attack | hold)], w[~(attack | hold)])
    assert moved[attack].min() >= vocab.pitch_base and moved[attack].max() < vocab.hold_base
    assert moved[hold].min() >= vocab.hold_base and moved[hold].max() < vocab.close_base
    assert (moved != w).any()


def test_training_pieces_are_in_c_major_or_a_minor_and_open_with_their_mode(chorales):
    from bot.music.keys import estimate_key

    vocab = Vocabulary.fit(chorales)
    for piece, ids in zip(chorales, encode_pieces(chorales, vocab)):
        key = estimate_key(vocab.decode(ids))
        assert key is not None and key.name in ("C major", "A minor"), piece.name
        assert ids[:3].tolist() == vocab.head(key.mode, "chorale")
        assert piece.meta["key"].endswith(key.mode)


def test_music21_sources_carry_a_style_and_validation_stays_the_chorales(chorales):
    others = [Piece(f"motet{i}", chorales[0].events, meta={"style": "renaissance"}) for i in range(40)]
    train, val = split_by_piece(chorales + others)
    _, val_alone = split_by_piece(chorales)
    assert [p.name for p in val] == [p.name for p in val_alone]
    assert all(p.meta["style"] == "chorale" for p in chorales)


def test_renaissance_music_is_read_at_half_its_written_note_values():
    """Monteverdi's minim beat read as a quarter: his notes then move at about the chorales' pace."""
    from bot.music.corpus import corpus_works, parse_corpus_work

    (piece,) = load_pieces("corpus:monteverdi", limit=1)
    written = parse_corpus_work(corpus_works("corpus:monteverdi")[0])
    assert piece.meta["style"] == "renaissance"
    assert [(e.onset, e.duration) for e in piece.events] == [
        (e.onset / 2, e.duration / 2) for e in written.events
    ]
    onsets = sorted({e.onset for e in piece.events})
    assert 0.4 < (onsets[-1] - onsets[0]) / (len(onsets) - 1) < 1.2  # beats between onsets; chorales 0.63


def test_cache_is_plain_json(chorales):
    files = list(cache_dir().glob("pieces-*.json"))
    assert files
    data = json.loads(files[0].read_text())
    assert data["entries"]


def test_folder_of_midi_files_with_a_corrupt_one(tmp_path, midi_folder, caplog):
    folder = tmp_path / "songs"
    folder.mkdir()
    for f in sorted(midi_folder.glob("*.mid"))[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    pieces = load_pieces(str(folder))
    assert len(pieces) == 3
    assert any("broken.mid" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [None, b"not music at all"])
def test_folder_without_music_is_an_error(tmp_path, content):
    if content is not None:
        (tmp_path / "junk.mid").write_bytes(content)
    with pytest.raises(BadData):
        load_pieces(str(tmp_path))


def test_shifted_windows_still_cover_every_token_once(chorales):
    vocab = Vocabulary.fit(p.events for p in chorales)
    seqs = encode_pieces(chorales[:3], vocab)
    for offset in (0, 7, 49):
        w = windows(seqs, 50, offset)
        assert int((w[:, 1:] != 0).sum()) == sum(len(s) - 1 for s in seqs)
