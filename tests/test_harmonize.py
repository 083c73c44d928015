"""Harmonizing a melody: kept note for note, four voices under it, a cadence, hostile files, the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.model.harmonize import cadence_for, harmonize, harmonize_line, plan_key
from bot.model.steps import NgramSteps, NumpySteps
from bot.music.events import Event
from bot.music.harmony import FourVoices, figures, parallels
from bot.music.melody import melody_from_events, read_melody
from bot.music.midi import read_midi
from bot.music.midi_out import midi_bytes
from bot.options import Options

pytestmark = pytest.mark.timeout(300)

# "Ach Gott, vom Himmelreich": a soprano line with a pickup, quarters, a half note and a rest.
TUNE = [
    (0.0, 1.0, 67),
    (1.0, 1.0, 67),
    (2.0, 1.0, 69),
    (3.0, 1.0, 71),
    (4.0, 0.5, 72),
    (4.5, 0.5, 71),
    (5.0, 1.0, 69),
    (6.0, 2.0, 67),
    (9.0, 1.0, 71),
    (10.0, 1.0, 72),
    (11.0, 1.0, 74),
    (12.0, 1.0, 72),
    (13.0, 1.0, 71),
    (14.0, 1.0, 69),
    (15.0, 3.0, 67),
]


def tune_bytes(shift: int = 0) -> bytes:
    return midi_bytes([Event(on, du, (p + shift,)) for on, du, p in TUNE], tempo=84)


def voices(piece) -> np.ndarray:
    """Each melody note's chord, top down: (n, 4)."""
    return np.array([sorted(e.pitches, reverse=True) for e in piece.events])


def test_the_melody_is_kept_note_for_note_with_three_voices_under_it(composer):
    melody = read_melody(tune_bytes(), "tune")
    piece = harmonize(composer, Options(rng_seed=3), melody)
    assert [(e.onset, e.duration) for e in piece.events] == [(on, du) for on, du, _ in TUNE]
    chords = voices(piece)
    assert chords[:, 0].tolist() == [p for _, _, p in TUNE]  # the top voice is the melody, every note
    assert all(len(set(e.pitches)) == 4 for e in piece.events)  # four voices wherever it sounds
    assert (np.diff(chords, axis=1) < 0).all()  # no lower voice at or above the one over it
    # What a user downloads says the same: the melody is the top line of the .mid.
    again = read_melody(piece.midi(), "again")
    assert [(n.onset, n.duration, n.pitches[0]) for n in again.notes] == TUNE
    split = FourVoices.from_events(piece.events, piece.melody)
    f = figures(split)
    assert f["four_voices"] == 1.0 and f["crossed_slices"] == 0


def test_no_parallel_fifths_or_octaves_and_a_closing_cadence(composer):
    melody = read_melody(tune_bytes(), "tune")
    prepared = 0
    for seed in range(3):
        piece = harmonize(composer, Options(rng_seed=seed), melody)
        chords = voices(piece)
        joined = [i for i in range(1, len(TUNE)) if TUNE[i - 1][0] + TUNE[i - 1][1] == TUNE[i][0]]
        for i in joined:
            assert parallels(chords[i - 1 : i + 1])[0] == 0, (seed, i, chords[i - 1 : i + 1])
        assert piece.key == "G major"
        assert chords[-1, 3] % 12 == 7 and set(chords[-1] % 12) <= {7, 11, 2}  # I in root position
        prepared += chords[-2, 3] % 12 == 2  # prepared by the dominant (V-I under 69-67) unless that
        # would have meant parallels after the chord before
    assert prepared >= 1


def test_same_options_same_chorale_and_the_seed_matters(composer):
    melody = read_melody(tune_bytes(), "tune")
    a, b = (harmonize(composer, Options(rng_seed=5), melody) for _ in range(2))
    assert a.midi() == b.midi()
    others = {harmonize(composer, Options(rng_seed=s), melody).midi() for s in range(6, 10)}
    assert len(others) > 1


def test_a_melody_in_another_octave_is_harmonized_in_the_sopranos(composer):
    melody = read_melody(tune_bytes(-24), "low")
    assert melody.octaves == 2
    piece = harmonize(composer, Options(rng_seed=1), melody)
    assert voices(piece)[:, 0].tolist() == [p for _, _, p in TUNE]


def test_a_melody_wider_than_a_soprano_is_folded_and_the_moved_notes_named(composer):
    from test_melody import wide_tune

    melody = read_melody(midi_bytes(wide_tune()), "theme")
    piece = harmonize(composer, Options(rng_seed=2), melody)
    top = voices(piece)[:, 0].tolist()
    assert top == melody.pitches  # the folded line is the soprano, every note
    assert [p % 12 for p in top] == [n.pitches[0] % 12 for n in wide_tune()]
    assert piece.folded == "17 notes moved by an octave to fit a soprano's range: bars 1-2, 5-6"


def test_numpy_steps_match_the_network(composer):
    """Stepping the LSTM in NumPy gives the network's own next-token distribution at every step."""
    model = composer.model
    assert NumpySteps.supports(model)
    ids = np.array(model.vocab.encode(read_melody(tune_bytes()).notes, mode="major", style="chorale"))
    steps = NumpySteps(model, k=2)
    got = [steps.start(ids[:1])]
    for t in ids[1:-1]:
        got.append(steps.feed(np.array([t, t]), np.arange(2)))
    logits = np.asarray(model.net(model.inputs(ids[None, :-1]), training=False))[0].astype(np.float64)
    want = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    assert np.allclose(np.stack(got)[:, 0], want, atol=1e-3) and np.allclose(
        np.stack(got)[:, 1], want, atol=1e-3
    )


def test_the_ngram_can_stand_in_for_the_network(chorales, composer):
    from bot.eval.evaluate import KneserNey
    from bot.music.corpus import encode_pieces

    vocab = composer.vocab
    kn = KneserNey(encode_pieces(chorales, vocab), len(vocab), order=3)
    notes = read_melody(tune_bytes(), "tune").notes
    moved = [Event(n.onset, n.duration, (n.pitches[0] - 7,)) for n in notes]  # G major -> C major
    lower = harmonize_line(NgramSteps(kn), vocab, moved, "major", None, 1.0, np.random.default_rng(0))
    assert lower.shape == (len(TUNE), 3)
    assert (lower < np.array([n.pitches[0] for n in moved])[:, None]).all()


def test_a_key_asked_for_moves_the_melody_there(composer):
    melody = read_melody(tune_bytes(), "tune")
    assert plan_key(melody.notes, None)[:2][1] == "melody"
    piece = harmonize(composer, Options(rng_seed=1, key="A major"), melody)
    assert piece.key == "A major" and voices(piece)[:, 0].tolist() == [p + 2 for _, _, p in TUNE]
    relative = harmonize(composer, Options(rng_seed=1, key="E minor"), melody)
    assert relative.key == "G major" and "relative" in relative.key_text  # E minor's relative, in major


def test_cadences():
    assert cadence_for(60, 62, 0, False).penultimate_bass == 7  # 2 -> 1 in C major: V-I
    assert cadence_for(60, 62, 0, False).final_bass == 0
    assert cadence_for(62, 60, 0, False).final_bass == 7  # ending on 2: a half close on V
    assert 4 in cadence_for(57, 59, 9, True).final_chord  # A minor may end on a major chord
    assert cadence_for(61, 60, 0, False) is None  # a chromatic last note: the model decides


def test_hostile_melodies_give_a_chorale_or_one_error(composer):
    from test_melody import hostile_melodies

    for name, melody in hostile_melodies():
        piece = harmonize(composer, Options(rng_seed=1), melody)
        top = [max(e.pitches) for e in piece.events]
        assert top == melody.pitches, name
        assert read_midi(piece.midi()).events, name


def test_a_chorale_soprano_round_trip(chorales, composer):
    """A real soprano: harmonized and scored against Bach's own chord on each beat."""
    soprano = [Event(e.onset, e.duration, (max(e.pitches),)) for e in chorales[0].events]
    melody = melody_from_events(soprano, chorales[0].name)
    piece = harmonize(composer, Options(rng_seed=2), melody)
    assert [max(e.pitches) for e in piece.events] == melody.pitches
    assert all(len(e.pitches) == 4 for e in piece.events)


def etude(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=timeout
    )


def test_harmonize_command_writes_the_files_of_a_reply(tiny_model_dir, tmp_path):
    melody = tmp_path / "tune.mid"
    melody.write_bytes(tune_bytes())
    r = etude(
        "harmonize",
        "--model",
        str(tiny_model_dir),
        "--melody",
        str(melody),
        "--rng-seed",
        "4",
        "--out",
        str(tmp_path / "out"),
        "--instrument",
        "organ",
        "--tempo",
        "72",
    )
    assert r.returncode == 0, r.stderr
    paths = [Path(p) for p in r.stdout.split()]
    assert [p.suffix for p in paths] == [".mid", ".ogg", ".wav", ".png"] and all(p.is_file() for p in paths)
    assert "15 melody notes in four parts" in r.stderr and "72 bpm" in r.stderr
    out = read_midi(paths[0].read_bytes())
    assert [max(e.pitches) for e in out.events if len(e.pitches) == 4] == [p for _, _, p in TUNE]


def test_harmonize_command_says_which_notes_were_folded(tiny_model_dir, tmp_path):
    from test_melody import wide_tune

    melody = tmp_path / "theme.mid"
    melody.write_bytes(midi_bytes(wide_tune()))
    r = etude("harmonize", "--model", str(tiny_model_dir), "--melody", str(melody), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "17 notes moved by an octave to fit a soprano's range: bars 1-2, 5-6" in r.stderr


@pytest.mark.parametrize(
    "make,expect",
    [
        (lambda d: d.joinpath("none.mid"), "cannot be read"),
        (lambda d: _write(d / "fake.mid", b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40)), "not a MIDI file"),
        (
            lambda d: _write(
                d / "long.mid", midi_bytes([Event(i / 2, 0.5, (60 + i % 7,)) for i in range(401)])
            ),
            "at most 400",
        ),
    ],
)
def test_bad_melodies_get_one_error_line(tmp_path, make, expect):
    path = make(tmp_path)
    r = etude("harmonize", "--melody", str(path), "--out", str(tmp_path), timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_eval_harmony_scores_bach_and_the_model(tiny_model_dir):
    from bot.eval.harmony_eval import evaluate_harmony, harmony_table

    result = evaluate_harmony(str(tiny_model_dir), limit=2, baseline=False)
    rows = result["rows"]
    assert result["chorales"] == 2
    assert set(rows) == {"bach", "model", "model, no rule", "network alone", "prior alone"}
    assert rows["bach"]["bass_on_beats"] == 1.0 and rows["bach"]["four_voices"] > 0.9
    assert rows["model"]["four_voices"] == 1.0 and rows["model"]["crossed_slices"] == 0
    assert 0 <= rows["model"]["bass_on_beats"] <= 1 and rows["model"]["beats"] > 0
    assert rows["model"]["parallels"] <= rows["model, no rule"]["parallels"]
    # The prior alone writes only a bass: its other figures are not there to show.
    assert (
        set(rows["prior alone"]) >= {"bass_equal", "beats", "bass_on_beats"}
        and "parallels" not in rows["prior alone"]
    )
    assert rows["prior alone"]["beats"] > 0 and 0 <= rows["prior alone"]["bass_on_beats"] <= 1
    table = harmony_table(result)
    assert "bass on beats" in table and "targets:" in table and len(table.splitlines()) == 8
    assert "harmony prior to the power" in table.splitlines()[0]
    prior_line = next(line for line in table.splitlines() if line.startswith("prior alone"))
    assert prior_line.count("—") == 4 and prior_line.rstrip().endswith("%")
