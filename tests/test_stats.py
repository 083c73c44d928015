"""Musical statistics on hand-made pieces whose answers a musician can work out, and on real chorales."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bot.music import analysis
from bot.music import stats as S
from bot.music.events import Event
from bot.music.keys import Key, estimate_key

pytestmark = pytest.mark.timeout(60)

C, D, E, F, G, A, B = 60, 62, 64, 65, 67, 69, 71


def chords(*voicings: tuple[int, ...], beats: float = 1.0, start: float = 0.0) -> list[Event]:
    """Block chords, one per `beats`, every voice struck together."""
    return [Event(start + i * beats, beats, tuple(sorted(v))) for i, v in enumerate(voicings)]


def line(*pitches: int, beats: float = 1.0, start: float = 0.0) -> list[Event]:
    return [Event(start + i * beats, beats, (p,)) for i, p in enumerate(pitches)]


# Four-part, root-position chords in C major (bass, tenor, alto, soprano).
I = (48, 55, 64, 72)  # noqa: E741 (Roman numerals name the chords)  C E G C
IV = (41, 57, 65, 72)  # F A F C: no parallels from I (soprano holds, others move by step or leap)
V = (43, 55, 62, 71)  # G G D B
V7 = (43, 53, 62, 71)  # G F D B
I6 = (52, 55, 60, 72)  # first inversion: E in the bass
ii = (50, 57, 65, 74)  # D A F D


def test_i_iv_v_i_ends_with_a_cadence() -> None:
    piece = chords(I, IV, V, I)
    inside, ends, length = S.cadences(piece)
    assert ends and inside == 0 and length == 4
    assert estimate_key(piece) == Key(0, "major")


def test_plagal_and_dominant_seventh_endings_count() -> None:
    assert S.cadences(chords(I, V, IV, I))[1]
    assert S.cadences(chords(I, IV, V7, I))[1]


def test_endings_that_are_not_cadences() -> None:
    assert not S.cadences(chords(I, IV, I, V))[1]  # a half cadence: stops on the dominant
    assert not S.cadences(chords(I, IV, V, I6))[1]  # the tonic in first inversion
    assert not S.cadences(chords(I, IV, ii, I))[1]  # ii does not lead home
    assert not S.cadences(line(C, D, E, F, G, F, E, D, C))[1]  # a bare melody spells no chords


def test_cadence_in_minor_with_a_picardy_third() -> None:
    i = (45, 57, 64, 72)  # A E C
    iv = (50, 57, 65, 74)  # D A F D
    v = (40, 56, 64, 71)  # E G# B E
    picardy = (45, 57, 64, 73)  # A E C#
    assert estimate_key(chords(i, iv, v, i, iv, v, i)).minor
    assert S.cadences(chords(i, iv, v, i, iv, v, i))[1]
    assert S.cadences(chords(i, iv, v, i, iv, v, picardy))[1]


def test_a_cadence_inside_the_piece_arrives_on_a_held_chord() -> None:
    first = chords(I, IV, V) + [Event(3, 2, I)]  # the tonic held two beats: a phrase ends there
    second = chords(IV, V7, I, start=5)
    inside, ends, length = S.cadences(first + second)
    assert inside == 1 and ends and length == 8
    assert S.piece_statistics(first + second)["cadences_per_16_beats"] == pytest.approx(2.0)
    # The same chords in eighth notes throughout pass through V-I without arriving.
    assert S.cadences(chords(I, IV, V, I, IV, V7, I, beats=0.5))[0] == 0


def test_a_pair_of_parallel_fifths_is_counted() -> None:
    fifths = chords((48, 55), (50, 57))  # C-G up to D-A
    assert S.parallel_perfects_per_change(analysis.moments(fifths)) == 1.0
    octaves = chords((48, 60), (47, 59))  # C-C down to B-B
    assert S.parallel_perfects_per_change(analysis.moments(octaves)) == 1.0
    twelfths = chords((36, 55), (38, 57))  # compound fifths count too
    assert S.parallel_perfects_per_change(analysis.moments(twelfths)) == 1.0


def test_what_is_not_a_parallel() -> None:
    contrary = chords((48, 55), (43, 62))  # C-G to G-D in contrary motion
    assert S.parallel_perfects_per_change(analysis.moments(contrary)) == 0.0
    oblique = chords((48, 55), (48, 52))  # one voice holds its pitch
    assert S.parallel_perfects_per_change(analysis.moments(oblique)) == 0.0
    thirds = chords((48, 52), (50, 53))
    assert S.parallel_perfects_per_change(analysis.moments(thirds)) == 0.0
    # The textbook progression has none; a melody has no voices to compare.
    assert S.parallel_perfects_per_change(analysis.moments(chords(I, IV, V, I))) == 0.0
    assert S.parallel_perfects_per_change(analysis.moments(line(C, D, E))) is None


def test_parallels_are_per_chord_change_and_voices_ranked_from_the_top() -> None:
    # Four voices; tenor and bass move in fifths (G2-D3 to A2-E3) on the second change only.
    piece = chords((43, 50, 59, 67), (43, 50, 60, 67), (45, 52, 60, 67))
    assert S.parallel_perfects_per_change(analysis.moments(piece)) == pytest.approx(1 / 2)
    # A change of texture (three voices to four) is not compared.
    assert S.parallel_perfects_per_change(analysis.moments(chords((48, 55, 64), (50, 57, 62, 65)))) is None


def test_held_notes_sound_on_at_later_onsets() -> None:
    # The soprano holds G for two beats while the bass moves: the second onset still sounds the G.
    piece = [Event(0, 2, (67,)), Event(0, 1, (48,)), Event(1, 1, (50,))]
    ms = analysis.moments(piece)
    assert [m.sounding for m in ms] == [(48, 67), (50, 67)]
    assert [m.attacks for m in ms] == [(48, 67), (50,)]
    assert S.notes_per_onset(ms) == 1.5


def test_entropy_chromatic_is_maximal_one_pitch_is_zero() -> None:
    chromatic = line(*range(60, 72))
    assert S.pitch_class_entropy(chromatic) == pytest.approx(math.log2(12))
    assert S.pitch_class_entropy(line(C, C + 12, C)) == 0.0
    assert S.pitch_class_entropy(line(C, D, E, F, G, A, B)) == pytest.approx(math.log2(7))
    assert S.pitch_class_entropy([]) is None


def test_scale_consistency() -> None:
    assert S.scale_consistency(line(C, D, E, F, G, A, B)) == 1.0
    assert S.scale_consistency(line(*range(60, 72))) == pytest.approx(7 / 12)
    assert S.scale_consistency(line(C, D, E, 66)) == 1.0  # C D E F#: all in G major
    assert S.scale_consistency(line(C, D, E, F, G, A, B, 61)) == pytest.approx(7 / 8)
    assert S.scale_consistency(line(C, D, E, 63, 68, 73)) == pytest.approx(4 / 6)  # best: A-flat major


def test_soprano_steps() -> None:
    assert S.soprano_steps(analysis.moments(line(C, D, E, G))) == pytest.approx(2 / 3)
    assert S.soprano_steps(analysis.moments(line(C, C, D))) == 1.0  # a repeated note is no move
    assert S.soprano_steps(analysis.moments(line(C))) is None
    # The top voice is the highest sounding pitch, whatever moves underneath.
    assert S.soprano_steps(analysis.moments(chords((48, 72), (43, 71), (36, 67)))) == pytest.approx(1 / 2)


def test_key_changes() -> None:
    c_major = line(*[C, D, E, F, G, A, B, C + 12] * 4, beats=0.5)  # 16 beats of C major
    f_sharp = line(*[p + 6 for p in [C, D, E, F, G, A, B, C + 12] * 4], beats=0.5, start=16)
    assert S.key_changes_per_16_beats(c_major + line(C, E, G, C + 12, beats=1, start=16)) == 0.0
    moved = S.key_changes_per_16_beats(c_major + f_sharp)
    assert moved is not None and 0 < moved <= 3 * 16 / 28  # windows 0..24: changes while crossing
    assert S.key_changes_per_16_beats(line(C, D, E)) is None  # shorter than one window


def test_duration_histogram_and_distance() -> None:
    quarters = line(C, D, E, F)
    h = S.duration_histogram(quarters)
    assert h[S.DURATION_CLASSES.index(1.0)] == 1.0
    assert S.histogram_distance(h, h) == 0.0
    assert S.histogram_distance(h, S.duration_histogram(line(C, D, beats=0.5))) == 1.0
    triplets = line(C, D, E, beats=1 / 3)
    assert S.duration_histogram(triplets)[S.DURATION_CLASSES.index(1 / 3)] == 1.0
    mixed = quarters + line(C, D, E, F, beats=2, start=4)
    assert S.histogram_distance(h, S.duration_histogram(mixed)) == 0.5


def test_a_tune_that_comes_back() -> None:
    tune = [C, D, E, C, E, F, G, G]
    assert S.repeats_early(analysis.moments(line(*tune, *tune)))
    # Harmonised differently the second time: the tune still comes back.
    again = [Event(8 + i, 1, (p, p - 12 - 3 * (i % 2))) for i, p in enumerate(tune)]
    assert S.repeats_early(analysis.moments(line(*tune) + again))
    assert not S.repeats_early(analysis.moments(line(*tune, *[p + 2 for p in tune])))  # transposed
    assert not S.repeats_early(analysis.moments(line(*tune) + line(*tune, beats=0.5, start=8)))  # new rhythm
    late = line(*tune) + line(*range(40, 100), start=8) + line(*tune, start=68)
    assert not S.repeats_early(analysis.moments(late))  # comes back only after 64 beats
    assert not S.repeats_early(analysis.moments(line(*tune[:7], *tune[:7])))  # only 7 notes


def test_summaries_and_distance() -> None:
    pieces = [chords(I, IV, V, I), chords(I, IV, I, V), line(C, D, E, G)]
    ref = S.pooled_duration_histogram(pieces)
    per = [S.piece_statistics(p, ref) for p in pieces]
    summary = S.summarize(per)
    assert summary["ends_with_cadence"] == {"share": pytest.approx(1 / 3, abs=1e-4), "n": 3}
    assert summary["notes_per_onset"]["median"] == 4.0
    assert summary["parallels_per_change"]["n"] == 2  # the melody has no voices to compare
    assert S.distance(summary, summary) == 0.0
    other = S.summarize([S.piece_statistics(line(*range(60, 84)), ref)])
    assert S.distance(other, summary) > 0.5
    assert S.fmt(S.STATISTICS[0], summary["pitch_class_entropy"]).count("[") == 1


def test_real_chorales_sound_like_chorales(chorales) -> None:
    per = [
        S.piece_statistics(p.events, S.pooled_duration_histogram([q.events for q in chorales]))
        for p in chorales
    ]
    summary = S.summarize(per)
    # Twelve real chorales: in a key, mostly stepwise, almost no parallels, most end on a cadence.
    assert 2.6 < summary["pitch_class_entropy"]["median"] < 3.3
    assert summary["scale_consistency"]["median"] > 0.85
    assert summary["parallels_per_change"]["median"] < 0.05
    assert summary["soprano_steps"]["median"] > 0.6
    assert 2 < summary["notes_per_onset"]["median"] < 4
    assert summary["ends_with_cadence"]["share"] >= 0.5
    assert np.isfinite(S.distance(summary, summary))


# -- the musical section of `etude eval` ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_copy(tiny_model_dir, tmp_path_factory):
    """The shared tiny model in a folder of its own, so writing its card touches no other test's model."""
    import shutil

    out = tmp_path_factory.mktemp("music-model") / "tiny"
    shutil.copytree(tiny_model_dir, out)
    return out


@pytest.mark.timeout(300)
def test_eval_music_section_and_card(model_copy) -> None:
    from bot.eval import music_eval as ME

    result = ME.evaluate_music(str(model_copy), quick=True, write_card=True)
    music = result["music"]
    assert music["pieces"] == ME.QUICK_PIECES and music["length"] == ME.QUICK_LENGTH
    for s in S.STATISTICS:
        assert music["reference"][s.key]["n"] > 0, s.key
        assert s.key in music["generated"]
    assert music["generated"]["notes_per_onset"]["n"] == ME.QUICK_PIECES
    assert 0 <= music["distance"] < 100
    key = result["key_fidelity"]["validation pieces"]
    assert key["seeds"] > 0 and 0 <= key["share_within_one_fifth"] <= 1
    assert key["own_continuation"] > 0.5  # real music mostly stays near its key
    card = read_card(model_copy)
    assert card["music"]["generated"] == music["generated"]
    readme = (model_copy / "README.md").read_text()
    assert "## Music" in readme and "pitch-class entropy" in readme and "Seed key fidelity" in readme
    text = ME.music_table(music, result["key_fidelity"])
    assert all(s.label in text for s in S.STATISTICS)


@pytest.mark.timeout(300)
def test_the_sweep_behind_the_defaults_goes_into_the_card(model_copy, monkeypatch) -> None:
    from bot.eval import music_eval as ME

    real = ME.music_sweep
    monkeypatch.setattr(
        ME,
        "music_sweep",
        lambda composer, train_p, val_p, pieces, length: real(
            composer, train_p, val_p, temperatures=(0.5, 1.0), top_ps=(0.95,), pieces=2, length=30
        ),
    )
    result = ME.evaluate_music(str(model_copy), quick=True, sweep=True, write_card=True)
    card = read_card(model_copy)
    assert card["sweep"]["settings"] == result["sweep"]["settings"]
    readme = (model_copy / "README.md").read_text()
    assert "## Sampling defaults" in readme and card["sweep"]["table"] in readme


def read_card(folder) -> dict:
    import json

    return json.loads((folder / "card.json").read_text())


@pytest.mark.timeout(300)
def test_samples_are_the_same_every_run_and_the_sweep_ranks_settings(composer, chorales) -> None:
    from bot.eval import music_eval as ME
    from bot.music.corpus import split_by_piece

    train_p, val_p = split_by_piece(chorales)
    one = ME.music_section(composer, train_p, val_p, pieces=2, length=40)
    two = ME.music_section(composer, train_p, val_p, pieces=2, length=40)
    assert one["generated"] == two["generated"]
    sweep = ME.music_sweep(
        composer, train_p, val_p, temperatures=(0.3, 1.5), top_ps=(0.9, 1.0), pieces=2, length=40
    )
    rows = sweep["settings"]
    assert sorted((r["temperature"], r["top_p"]) for r in rows) == [
        (0.3, 0.9),
        (0.3, 1.0),
        (1.5, 0.9),
        (1.5, 1.0),
    ]
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    text = ME.sweep_table(sweep)
    assert "validation" in text and "1.5" in text


@pytest.mark.timeout(300)
def test_cli_eval_music_only_json(model_copy) -> None:
    import json
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "eval",
            "--model",
            str(model_copy),
            "--music-only",
            "--quick",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert "baselines" not in result and result["music"]["pieces"] == 8
    assert result["key_fidelity"]["validation pieces"]["seeds"] > 0
