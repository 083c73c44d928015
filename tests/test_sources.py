"""The licence registry of training sources, the folk collections as `--data folk`, and the card's table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.errors import BadData
from bot.music.corpus import MUSIC21_SOURCES, encode_pieces, expand, load_pieces, split_by_piece
from bot.music.encoding import Vocabulary
from bot.music.sources import ALIASES, FOLK_SOURCES, SOURCES, card_sources, check_trainable, entry

pytestmark = pytest.mark.timeout(300)
TINY = {"hidden": 32, "embed_dim": 16, "seq_len": 48, "batch_size": 8}


def test_every_source_the_trainer_reads_has_an_entry_and_exists_in_music21():
    from bot.music.corpus import corpus_works
    from bot.music.folk import folk_files

    named = {name for name, _ in expand("music21+folk+corpus:beethoven")}
    assert {name for name, _ in MUSIC21_SOURCES + FOLK_SOURCES} <= named
    for name in named | set(ALIASES):
        assert check_trainable(name).trainable, name
    for name, source in SOURCES.items():
        assert source.terms and source.decision and source.origin, name
        if name.startswith("folk:"):
            assert folk_files(name), name
        elif name.startswith("corpus:") or name == "chorales":
            assert corpus_works(name), name
    assert entry("/home/me/songs").name == "folder"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ("corpus:essenFolksong", "non-commercial"),
        ("music21+corpus:essenFolksong", "non-commercial"),
        ("corpus:palestrina", "derivative electronic format"),
    ],
)
def test_sources_their_terms_forbid_are_refused_before_any_parse(data, why):
    with pytest.raises(BadData, match=why):
        load_pieces(data)


def test_a_corpus_without_an_entry_is_refused():
    with pytest.raises(BadData, match="no licence entry"):
        load_pieces("corpus:schoenberg")


def test_cli_refuses_essen_in_one_line(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "train",
            "--data",
            "corpus:essenFolksong",
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("error: corpus:essenFolksong") and "non-commercial" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_card_lists_each_source_and_fails_without_an_entry():
    rows = card_sources({"chorales": 371, "folk:oneills1850": 40, "/home/me/songs": 3})
    assert [(r["source"], r["pieces"], r["style"]) for r in rows] == [
        ("chorales", 371, "chorale"),
        ("folk:oneills1850", 40, "folk"),
        ("/home/me/songs", 3, "other"),
    ]
    assert all(r["terms"] and r["decision"] for r in rows)
    with pytest.raises(BadData, match="no licence entry"):
        card_sources({"chorales": 371, "corpus:schoenberg": 12})
    with pytest.raises(BadData, match="non-commercial"):
        card_sources({"corpus:essenFolksong": 100})
    with pytest.raises(BadData):
        card_sources({})


def test_folk_tunes_are_pieces_with_their_own_style_token():
    pieces = load_pieces("folk:ryansMammoth", limit=3)
    assert len(pieces) == 3 and len({p.name for p in pieces}) == 3
    vocab = Vocabulary.fit(pieces)
    for piece, ids in zip(pieces, encode_pieces(pieces, vocab)):
        assert piece.meta["style"] == "folk" and piece.meta["source"] == "folk:ryansMammoth"
        assert vocab.tokens[ids[1]] == "<folk>"
        # A fiddle tune: one note at a time.
        assert max(len(e.pitches) for e in piece.events) <= 2


def test_a_book_of_tunes_gives_one_piece_a_tune():
    from bot.music.folk import parse_folk_file

    tunes = parse_folk_file("oneills1850/0487-0500.abc")
    assert len(tunes) == 14
    assert len({t.name for t in tunes}) == 14 and tunes[0].name == "oneills1850-0487-0500-487"


def test_folk_data_choice_names_every_collection_and_keeps_the_held_out_pieces_out():
    from bot.eval.heldout import HELD_OUT, check_held_out, training_works

    assert expand("folk") == list(FOLK_SOURCES)
    works = training_works()
    assert "oneills1850/0001-0050.abc" in works and "bach/bwv846.mxl" not in works
    check_held_out(list(HELD_OUT))


def test_the_listener_hears_folk_tunes_no_run_reads_nor_the_plan_was_chosen_on():
    from bot.eval.heldout import HELD_OUT, LISTENER_TUNES, listener_tunes, training_works
    from bot.music.folk import folk_files

    tunes = listener_tunes()
    works = [t.meta["work"] for t in tunes]
    assert len(set(works)) == LISTENER_TUNES and all(t.meta.get("meter") and t.events for t in tunes)
    free = [w for w in folk_files("folk:ryansMammoth") if w not in training_works()]
    chosen_on = set([w for w in free if w not in {h.work for h in HELD_OUT}][1::7])  # `bot.model.form`
    assert set(works) <= set(free) and not set(works) & chosen_on
    assert not set(works) & {h.work for h in HELD_OUT}


def test_a_share_of_a_source_is_every_nth_of_its_pieces(tmp_path):
    from bot.music.corpus import thinned

    # `folk/4`: each folk collection read as `folk` reads it, then every 4th tune kept.
    assert expand("music21+folk/4") == list(MUSIC21_SOURCES) + [(f"{s}/4", n) for s, n in FOLK_SOURCES]
    assert thinned("folk:airdsAirs/4") == ("folk:airdsAirs", 4) and thinned("chorales") == ("chorales", 1)
    # A folder's path is never read as a share, whatever its last part.
    assert thinned(str(tmp_path / "2")) == (str(tmp_path / "2"), 1)
    assert thinned("corpus:palestrina/2") == ("corpus:palestrina", 2)
    with pytest.raises(BadData, match="palestrina is not trained on"):
        load_pieces("corpus:palestrina/2")


def test_training_from_folk_writes_the_sources_on_the_card(tmp_path):
    """A model of folk tunes: the card's table lists the source with its pieces and terms, and what was
    refused."""
    from bot.model.train import train

    card = train(
        "folk:ryansMammoth", tmp_path / "m", preset="small", epochs=1, limit=4, overrides=TINY, verbose=0
    )
    (row,) = card["data"]["sources"]
    assert (row["source"], row["pieces"], row["style"]) == ("folk:ryansMammoth", 4, "folk")
    assert card["data"]["styles"] == {"folk": card["data"]["train_pieces"]}
    readme = (tmp_path / "m" / "README.md").read_text()
    assert "### Sources and licences" in readme and "Ryan's Mammoth Collection" in readme
    assert "`corpus:essenFolksong`" in readme  # what was refused, and why


def test_a_tokens_file_with_a_source_without_an_entry_fails_the_card(tmp_path, chorales):
    from bot.model.train import TokenData, save_tokens, train

    train_p, val_p = split_by_piece(chorales)
    vocab = Vocabulary.fit(train_p)
    meta = {"source": "x", "keys": "reference", "sources": {"chorales": 11, "corpus:schoenberg": 1}}
    tokens = tmp_path / "t.npz"
    save_tokens(tokens, TokenData(vocab, encode_pieces(train_p, vocab), encode_pieces(val_p, vocab), meta))
    with pytest.raises(BadData, match="corpus:schoenberg has no licence entry"):
        train(None, tmp_path / "m", preset="small", epochs=1, overrides=TINY, verbose=0, tokens=tokens)
    assert not (tmp_path / "m" / "card.json").exists()
