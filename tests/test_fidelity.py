"""Seed fidelity on hand-built pieces: 1 for the real continuation and 0 for the chorale by construction,
the cut, the features, the guard on a tiny denominator, and one run through the shipped composer."""

from __future__ import annotations

import math

import pytest

from bot.eval import fidelity as F
from bot.music.events import Event, Piece

pytestmark = pytest.mark.timeout(120)

SCALE = (60, 62, 64, 65, 67, 69, 71, 72)


def eighths(beats: int, start: float = 0.0, low: int = 48) -> list[Event]:
    """A melody in eighths over a held bass note per beat: a piece on an eighth-note grid."""
    out = []
    for i in range(beats * 2):
        out.append(Event(start + i / 2, 0.5, (SCALE[i % len(SCALE)] + 12,)))
        if i % 2 == 0:
            out.append(Event(start + i / 2, 1.0, (low + (i // 2) % 5,)))
    return out


def blocks(beats: int, start: float = 0.0) -> list[Event]:
    """Four-part block chords, one a beat, in another key and register: a stand-in for a chorale."""
    shapes = [(43, 50, 59, 67), (45, 52, 60, 69), (47, 54, 62, 71), (42, 50, 57, 66)]
    return [Event(start + i, 1.0, shapes[i % len(shapes)]) for i in range(beats)]


def test_cut_takes_a_seed_and_its_next_part_of_equal_length() -> None:
    c = F.cut(Piece("long", eighths(200)))
    assert c is not None and c.beats == 64
    assert min(e.onset for e in c.seed) == 0 and max(e.onset for e in c.seed) < 64
    assert min(e.onset for e in c.real) == 64 and max(e.onset + e.duration for e in c.real) <= 128
    short = F.cut(Piece("short", eighths(50)))
    assert short is not None and short.beats == 25  # halves of a piece shorter than 128 beats
    assert F.cut(Piece("tiny", eighths(20))) is None  # halves under MIN_BEATS say too little


def test_notes_held_over_the_cut_are_cut_off() -> None:
    notes = [(0, 1), (63, 4), (64, 1), (70, 1), (127.5, 4), (129, 1)]
    c = F.cut(Piece("held", [Event(on, du, (60 + i,)) for i, (on, du) in enumerate(notes)]))
    assert c is not None and c.beats == 64
    assert [(e.onset, e.duration) for e in c.seed] == [(0, 1), (63, 1)]
    assert [(e.onset, e.duration) for e in c.real] == [(64, 1), (70, 1), (127.5, 0.5)]


def test_features_of_an_eighth_note_line() -> None:
    f = F.features(eighths(16))
    assert f["onsets_per_beat"] == pytest.approx(2.0)
    assert f["beat_positions"][0] == pytest.approx(0.5) and f["beat_positions"][6] == pytest.approx(0.5)
    assert F.on_grid_share(eighths(16)) == 1.0
    triplets = [Event(i / 3, 1 / 3, (60,)) for i in range(30)]
    assert F.on_grid_share(triplets) == pytest.approx(1 / 3, abs=0.05)  # only the beats lie on the grid


def test_distances_are_zero_to_itself_and_sensible_across() -> None:
    a, b = F.features(eighths(16)), F.features(blocks(16))
    assert all(v == pytest.approx(0.0) for v in F.distances(a, a).values())
    d = F.distances(a, b)
    assert d["onsets_per_beat"] == pytest.approx(math.log(2))  # two onsets a beat against one
    assert d["notes_per_onset"] == pytest.approx(abs(math.log(4 / 1.5)))
    assert 0 < d["pitch_classes"] <= 1 and 0 < d["beat_positions"] <= 1


def test_fidelity_is_one_for_the_real_continuation_and_zero_for_the_chorale() -> None:
    c = F.cut(Piece("piece", eighths(140)))
    chorale = blocks(int(c.beats), start=64)
    real = F.summarize([F.score_seed(c, c.real, chorale)])
    like_chorale = F.summarize([F.score_seed(c, chorale, chorale)])
    scored = [k for k, _ in F.FEATURES if real["features"][k]["fidelity"] is not None]
    assert len(scored) >= 5
    for k in scored:
        assert real["features"][k]["fidelity"] == pytest.approx(1.0)
        assert like_chorale["features"][k]["fidelity"] == pytest.approx(0.0)
    assert real["mean_fidelity"] == pytest.approx(1.0) and like_chorale["mean_fidelity"] == pytest.approx(0.0)
    assert real["grid_seeds"] == 1 and real["grid_kept"] == 1 and like_chorale["grid_kept"] == 1


def test_a_seeds_tune_brought_back_is_counted_on_each_side() -> None:
    """A continuation that plays 8 notes of the seed's tune again brings it back; the same notes a step
    higher, or blocks of another tune, do not; the summary counts each side and prints the counts."""
    c = F.cut(Piece("piece", eighths(140)))
    chorale = blocks(int(c.beats), start=64)
    higher = [Event(e.onset, e.duration, tuple(p + 2 for p in e.pitches)) for e in c.real]
    rows = [F.score_seed(c, c.real, chorale), F.score_seed(c, higher, chorale)]
    assert [r["model_brings_back"] for r in rows] == [True, False]
    assert rows[0]["real_brings_back"] and not rows[0]["chorale_brings_back"]
    g = F.summarize(rows)
    assert (g["brought_back_model"], g["brought_back_real"], g["brought_back_chorale"]) == (1, 2, 0)
    assert "motifs: in 1 of 2 continuations a passage of 8 notes of the seed's tune comes back" in "\n".join(
        F._count_lines(g)
    )


def test_a_tiny_or_negative_denominator_gives_no_ratio() -> None:
    assert F.fidelity(0.2, 0.3, 0.5) == pytest.approx(2 / 3)
    assert F.fidelity(0.30, 0.1, 0.31) is None  # chorale and real next within MIN_GAP
    assert F.fidelity(0.45, 0.6, 0.19) is None  # the real next part further than the chorale
    assert F.fidelity(0.09, 0.27, 0.12) is None  # a gap of 0.03: under a third of the chorale's 0.12
    assert F.fidelity(0.1, 0.9, 0.5) == pytest.approx(-1.0)  # further than the chorale: below 0


def test_chorale_excerpt_chains_chorales_and_leaves_out_the_seeds_own() -> None:
    chorales = [Piece("a", blocks(10)), Piece("b", blocks(12)), Piece("c", blocks(8))]
    ex = F.chorale_excerpt(chorales, 0, 25, skip="b")
    assert len(F.onsets(ex)) == 25 and max(e.onset for e in ex) < 25
    assert F.onsets(ex)[:12] == list(range(12))  # a's 10 beats, then c from beat 10


def test_seeds_continue_through_the_shipped_composer() -> None:
    from bot.model.composer import Composer

    pieces = [Piece("melody", eighths(80), meta={"style": "piano"}), Piece("chords", blocks(80))]
    pieces[1].meta["style"] = "chorale"
    chorales = [Piece(f"c{i}", blocks(20 + i)) for i in range(3)]
    result = F.fidelity_section(Composer(), pieces, chorales)
    assert set(result["groups"]) == {"piano", "trained styles"}
    for row in result["seeds"]:
        assert row["beats"] == 40 and all(v is not None for v in row["model"].values())
    piano = result["groups"]["piano"]
    assert piano["seeds"] == 1 and piano["grid_seeds"] == 1 and piano["key_seeds"] == 1
    assert "piano (1 seeds)" in F.fidelity_table(result)
    assert any("Seed fidelity" in line for line in F.card_markdown(result))
