"""The sampler and the compose pipeline: reproducible, batch-independent, guarded, fitted to the limits."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bot.errors import BadOption, BadSeed
from bot.model.masks import MAX_IDLE, MAX_RUN
from bot.model.sample import Request
from bot.music.events import GRID, Event, normalize, transpose
from bot.music.keys import Key, estimate_key
from bot.music.midi import read_midi
from bot.music.midi_out import midi_bytes
from bot.options import Options, cadence_margin, parse_instrument
from bot.render.files import write_outputs

pytestmark = pytest.mark.timeout(300)


def in_key(events, name: str) -> float:
    """The share of notes inside the key's scale (the minor one with its raised sixth and seventh)."""
    key = Key.parse(name)
    steps = {0, 2, 4, 5, 7, 9, 11} if key.mode == "major" else {0, 2, 3, 5, 7, 8, 9, 10, 11}
    pcs = [(p - key.tonic) % 12 for e in events for p in e.pitches]
    return sum(pc in steps for pc in pcs) / len(pcs)


def assert_ends(piece):
    """The last onset's notes are held (two beats at least) to the end of the piece."""
    last = max(e.onset for e in piece.events)
    end = max(e.onset + e.duration for e in piece.events)
    final = [e for e in piece.events if e.onset == last]
    assert all(e.onset + e.duration == end and e.duration >= 2.0 for e in final)


def test_length_counts_notes_and_chords(composer):
    for n in (1, 7, 120):
        piece = composer.compose_one(Options(length=n, rng_seed=3))
        assert n <= piece.onsets <= n + cadence_margin(n)
        assert piece.onsets == len({e.onset for e in piece.events})
        assert_ends(piece)
    assert cadence_margin(1) == 8 and cadence_margin(500) == 50


def test_the_piece_ends_with_the_end_token(composer):
    vocab = composer.vocab
    for seed in range(3):
        tokens = composer.sampler.sample([Request(tuple(vocab.head("major")), 30, 1.0, 0.95, seed)])[0]
        assert tokens[-1] == vocab.end and tokens.count(vocab.end) == 1
        assert vocab.is_shift(tokens[-2])  # the last chord sounds for that shift, then the piece ends
        onsets = vocab.count_onsets(tokens)
        assert 30 <= onsets <= 30 + cadence_margin(30)
        # It ended on a phrase end (a fermata), the model's own <end>, or at the margin.
        closes = [i for i, t in enumerate(tokens) if vocab.is_close(t)]
        first_after = next(i for i in closes if vocab.count_onsets(tokens[: i + 1]) >= 30)
        phrase_ends = [i for i in closes if i >= first_after and tokens[i] == vocab.phrase]
        if phrase_ends:
            assert phrase_ends == [closes[-1]]  # the first phrase end past the length is the last frame


def test_same_seed_gives_identical_midi(composer):
    a = composer.compose_one(Options(length=80, rng_seed=42, temperature=1.1)).midi()
    b = composer.compose_one(Options(length=80, rng_seed=42, temperature=1.1)).midi()
    c = composer.compose_one(Options(length=80, rng_seed=43, temperature=1.1)).midi()
    assert a == b and a != c


def test_batch_equals_each_request_alone(composer, chorales):
    seed = composer.seed(midi_bytes(chorales[0].events[:40], tempo=90), "bach")
    jobs = [
        (Options(length=60, rng_seed=1), None),
        (Options(length=25, rng_seed=2, temperature=0.7, top_p=0.8), seed),
        (Options(length=90, rng_seed=3, temperature=1.4), None),
        (Options(length=40, rng_seed=4, include_seed=True), seed),
    ]
    together = composer.compose(jobs)
    for (opts, s), piece in zip(jobs, together):
        alone = composer.compose_one(opts, s)
        assert alone.midi() == piece.midi()
        assert opts.length <= piece.onsets <= opts.length + cadence_margin(opts.length)


def test_sampler_output_follows_the_grammar(composer):
    vocab = composer.vocab
    allowed = vocab.grammar()
    reqs = [Request((vocab.start,), 100, 1.5, 1.0, s) for s in range(4)]
    for tokens in composer.sampler.sample(reqs):
        stream = [vocab.start, *tokens]
        assert all(allowed[a, b] for a, b in zip(stream, stream[1:]))
        assert 100 <= vocab.count_onsets(tokens) <= 110


def test_no_event_repeats_more_than_the_guard_allows(composer):
    # Near-argmax sampling is what made the tutorial repeat one note for the rest of the piece.
    vocab = composer.vocab
    for seed in range(3):
        tokens = composer.sampler.sample([Request((vocab.start,), 300, 0.05, 1.0, seed)])[0]
        # Identical frames = identical token groups (shift, pitches, closing bar).
        groups, cur = [], []
        for t in tokens:
            cur.append(t)
            if vocab.is_duration(t):
                groups.append(tuple(cur))
                cur = []
        longest = run = 1
        for a, b in zip(groups, groups[1:]):
            run = run + 1 if a == b else 1
            longest = max(longest, run)
        assert longest <= MAX_RUN


def test_no_piece_goes_more_than_eight_beats_without_a_new_note(composer):
    """Rests and held notes end by MAX_IDLE steps after the last note's start (the chorales' longest wait
    is 6 beats); a request whose network would wait longer is made to start a note there."""
    vocab = composer.vocab
    longest = 0
    for seed in range(24):
        tokens = composer.sampler.sample(
            [Request((vocab.start, vocab.mode_id("major")), 200, 1.5, 1.0, seed)]
        )[0]
        idle = 0
        attacked = False
        for t in tokens:
            if vocab.is_shift(t):
                idle += t - vocab.shift_base
                longest = max(longest, idle)
            elif vocab.is_attack(t):
                attacked = True
            elif vocab.is_duration(t):
                idle, attacked = (0, False) if attacked else (idle, False)
    assert MAX_IDLE - GRID < longest <= MAX_IDLE  # the cap is reached, and held


def test_seed_is_continued_and_can_be_included(composer, chorales):
    events = chorales[1].events[:30]
    seed = composer.seed(midi_bytes(events, tempo=72), "chorale")
    cont = composer.compose_one(Options(length=20, rng_seed=5), seed)
    assert cont.seed_events == 0 and cont.tempo == pytest.approx(72, abs=0.5)
    assert 0.0 <= cont.events[0].onset < 4.0  # from the downbeat of the seed's bar where it begins
    both = composer.compose_one(Options(length=20, rng_seed=5, include_seed=True), seed)
    assert both.seed_events == len(seed.events)
    assert [e.pitches for e in both.events[: both.seed_events]] == [e.pitches for e in seed.events]
    assert both.events[both.seed_events].onset >= both.events[both.seed_events - 1].onset


def test_a_seed_compiles_no_shape_of_its_own(composer, chorales):
    """A worker warms its sampler without seeds; a seeded job of the same length must find it warm."""
    composer.compose_one(Options(length=24, rng_seed=1))
    traces = composer.sampler._loop.traces()
    seed = composer.seed(midi_bytes(chorales[2].events[:40], tempo=90), "chorale")
    composer.compose_one(Options(length=24, rng_seed=2), seed)
    assert composer.sampler._loop.traces() == traces


def test_seed_outside_the_model_range_moves_and_comes_back(composer):
    vocab = composer.vocab
    high = [Event(i * 0.5, 0.5, (min(108, vocab.pitch_high + 14 + i % 3),)) for i in range(24)]
    seed = composer.seed(midi_bytes(high), "high")
    back = composer.plan(Options(rng_seed=1), seed)[3]
    assert back >= 6  # moved down by octaves for the model, up again for the listener
    piece = composer.compose_one(Options(length=30, rng_seed=1, include_seed=True), seed)
    new = piece.events[piece.seed_events :]
    # Moved back by the same octaves: the continuation sits near the seed, not in the model's range.
    assert np.mean([p for e in new for p in e.pitches]) > vocab.pitch_high - 24


def test_hostile_seeds_end_in_music_or_one_error(composer):
    cases = {
        "empty": b"",
        "random": bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        "wav": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40),
        "no notes": b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
    }
    for name, data in cases.items():
        with pytest.raises(BadSeed) as err:
            composer.seed(data, name)
        assert "\n" not in str(err.value)
    extremes = midi_bytes([Event(0.0, 1.0, (0, 127)), Event(1.0, 1.0, (1, 126))])
    piece = composer.compose_one(Options(length=10, rng_seed=1, include_seed=True), composer.seed(extremes))
    assert all(21 <= p <= 108 for e in piece.events for p in e.pitches)


def test_outputs_fit_max_bytes(composer, tmp_path):
    piece = composer.compose_one(Options(length=150, rng_seed=9, tempo=60))
    out = write_outputs(piece, tmp_path, max_bytes=400_000)
    # At 400 kB a long piece's .ogg may not fit even at the lowest bit rate; the note then says so.
    assert {"mid", "wav", "png"} <= set(out.paths) <= {"mid", "ogg", "wav", "png"}
    assert "ogg" in out.paths or "The .ogg is left out" in out.rendered.note
    assert all(p.stat().st_size <= 400_000 for p in out.paths.values())
    with wave.open(str(out.wav)) as w:
        assert w.getnframes() > 0
    assert out.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_midi(out.midi.read_bytes()).events


def test_options_are_checked():
    for bad in (dict(length=0), dict(length=2001), dict(temperature=-1), dict(top_p=0), dict(tempo=1000)):
        with pytest.raises(BadOption):
            Options(**bad).check()
    assert Options().check().rng_seed is None  # checking draws nothing
    assert (
        Options().with_rng_seed().rng_seed is not None and Options(rng_seed=7).with_rng_seed().rng_seed == 7
    )
    assert parse_instrument("organ") == 19 and parse_instrument("40") == 40
    with pytest.raises(BadOption):
        parse_instrument("kazoo")


def test_key_of_a_c_major_scale():
    scale = [Event(i, 1.0, (p,)) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])]
    assert estimate_key(scale).name == "C major"


E_MINOR_SEED = [
    Event(i * 0.5, 0.5, (p, p - 12))
    for i, p in enumerate([64, 66, 67, 69, 71, 72, 71, 69, 67, 66, 64, 63, 64] * 2)
]


def test_a_seed_in_e_minor_continues_in_e_minor(composer):
    seed = composer.seed(midi_bytes(E_MINOR_SEED, tempo=90), "e-minor")
    assert seed.key.name == "E minor"
    key, source, primer, back, last = composer.plan(Options(rng_seed=2), seed)
    assert (key.name, source) == ("E minor", "seed")
    # The network hears the seed in A minor, with the minor mode token...
    heard = composer.vocab.decode(primer)
    assert estimate_key(heard).name == "A minor" and primer[2] == composer.vocab.mode_id("minor")
    # ...and what it writes comes back to E minor.
    piece = composer.compose_one(Options(length=60, rng_seed=2, temperature=0.6), seed)
    assert piece.key == "E minor" and piece.key_text == "E minor (the seed's key)"
    assert in_key(piece.events, "E minor") >= 0.8
    grid, phase = seed.grid, round(last * GRID) % GRID  # the seed's grid, kept from where it stopped
    bar, bar_pos = seed.meter.bar_steps, seed.meter.position(last)  # and its bar, where the seed stopped
    request = Request(primer, 60, 0.6, 0.95, 2, grid, phase, bar=bar, bar_pos=bar_pos)
    raw = composer.vocab.decode(composer.sampler.sample([request])[0])
    assert [e.pitches for e in transpose(raw, back)] == [e.pitches for e in piece.events]


def test_the_key_option_moves_the_piece_and_the_seed(composer):
    piece = composer.compose_one(Options(length=40, rng_seed=4, key="Eb major", temperature=0.6))
    assert piece.key == "Eb major" and piece.key_source == "asked"
    assert in_key(piece.events, "Eb major") >= 0.8
    seed = composer.seed(midi_bytes(E_MINOR_SEED), "e-minor")
    both = composer.compose_one(Options(length=20, rng_seed=4, key="G minor", include_seed=True), seed)
    assert both.key == "G minor"
    assert estimate_key(both.events[: both.seed_events]).name == "G minor"  # the seed moved with it


def test_without_seed_or_key_the_rng_seed_draws_the_key(composer):
    keys = {composer.compose_one(Options(length=1, rng_seed=s)).key for s in range(8)}
    assert composer.compose_one(Options(length=1, rng_seed=5)).key_source == "drawn"
    assert len(keys) > 1 and keys <= set(composer.vocab.key_counts)


def test_a_seed_without_a_key_continues_in_a_drawn_one_and_says_so(composer):
    seed = composer.seed(midi_bytes([Event(i * 0.5, 0.5, (62,)) for i in range(16)]), "one-note")
    assert seed.key is None
    a = composer.compose_one(Options(length=12, rng_seed=8), seed)
    b = composer.compose_one(Options(length=12, rng_seed=8), seed)
    assert a.key_source == "drawn-unknown-seed" and a.key == b.key
    assert "could not be told" in a.key_text


def test_a_seed_in_triplets_keeps_its_rhythm(composer):
    third = 1 / 3
    events = [Event(i * third, third, (60 + (0, 4, 7, 12, 7, 4)[i % 6],)) for i in range(36)]
    seed = composer.seed(midi_bytes(events, tempo=100), "triplets")
    primer = composer.plan(Options(rng_seed=1), seed)[2]
    heard = composer.vocab.decode(primer)
    assert [round(e.onset * GRID) for e in heard] == [4 * i for i in range(36)]  # not snapped to sixteenths
    assert [round(e.duration * GRID) for e in heard[:-1]] == [4] * 35
    assert [e.onset for e in heard] == [e.onset for e in normalize(seed.events)]
    piece = composer.compose_one(Options(length=20, rng_seed=1, include_seed=True), seed)
    assert piece.events[: piece.seed_events] == seed.events


# -- the command line --------------------------------------------------------------------------------------
def etude(*args, env=None, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_error_line(r):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_compose_command_writes_its_files(tiny_model_dir, tmp_path, chorales):
    seed = tmp_path / "song.mid"
    seed.write_bytes(midi_bytes(chorales[2].events[:20]))
    r = etude(
        "compose",
        "--model",
        str(tiny_model_dir),
        "--length",
        "40",
        "--seed",
        str(seed),
        "--rng-seed",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--instrument",
        "organ",
    )
    assert r.returncode == 0, r.stderr
    assert "notes and chords" in r.stderr and ("major" in r.stderr or "minor" in r.stderr)
    paths = [Path(p) for p in r.stdout.split()]
    assert [p.suffix for p in paths] == [".mid", ".ogg", ".wav", ".png"] and all(p.is_file() for p in paths)


@pytest.mark.parametrize(
    "args,env,expect",
    [
        (["--length", "0"], {}, "length"),
        (["--temperature", "-1"], {}, "temperature"),
        (["--key", "H major"], {}, "key"),
        (["--style", "jazz"], {}, "style must be one of: chorale, renaissance, classical, folk"),
        (["--model", "/nonexistent/model"], {}, "no model folder"),
        (["--seed", "/nonexistent/seed.mid"], {}, "seed"),
        ([], {"SOUNDFONT": "/nonexistent/font.sf2"}, "soundfont"),
        ([], {"PATH": "/nonexistent"}, "ffmpeg"),
    ],
)
def test_bad_options_get_one_error_line(tmp_path, args, env, expect):
    line = one_error_line(etude("compose", "--out", str(tmp_path), *args, env=env, timeout=60))
    assert expect.lower() in line.lower()


def test_bad_seed_file_gets_one_error_line(tmp_path):
    seed = tmp_path / "fake.mid"
    seed.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    assert "not a MIDI file" in one_error_line(etude("compose", "--seed", str(seed), "--out", str(tmp_path)))


def hostile_seeds() -> dict[str, bytes]:
    """The issue's odd seeds, built with the byte-level helpers of test_midi."""
    from test_midi import ev, melody, meta, note, smf, tempo

    return {
        "pitches 0 and 127": smf([note(0, 96) + note(127, 96)]),
        "never released": smf([ev(0, 0x90, 60, 80) + ev(96, 0x90, 64, 80) + meta(0x01, b"end", delta=192)]),
        "absurd tempo": smf([tempo(1) + melody(8)]),
        "note hours long": smf([ev(0, 0x90, 60, 80) + ev(96 * 2 * 3600 * 5, 0x80, 60, 0) + note(62, 96)]),
        "hundreds of tracks": smf([note(30 + i % 90, 96, rest=96 * i) for i in range(300)]),
        "tens of thousands of notes": smf(
            [tempo(250_000) + b"".join(note(20 + i % 100, 8) for i in range(30_000))]
        ),
        "format 2": smf([tempo(500_000) + melody(4), tempo(1_000_000) + melody(4, first=80)], fmt=2),
        "smpte": smf(
            [tempo(250_000) + note(60, 1000) + note(62, 500, rest=1000)], division=(256 - 25) << 8 | 40
        ),
        "sysex and odd names": smf(
            [
                meta(0x03, b"\xff\xfe\x80 bad")
                + ev(0, 0xF0, 5, 0x7E, 0x7F, 9, 1, 0xF7)
                + meta(0x05, b"la\x00la\xff")
                + melody(4)
            ]
        ),
        "time division 0": smf([melody(4)], division=0),
        "drums only": smf([b"".join(note(36 + i % 10, 48, channel=9) for i in range(50))]),
        "cut in half": smf([melody(40)])[:200],
    }


@pytest.mark.timeout(120)
def test_odd_seeds_become_music_or_one_error(composer):
    for name, data in hostile_seeds().items():  # the test's timeout bounds them all: none may hang
        try:
            seed = composer.seed(data, name)
        except BadSeed as e:
            assert "\n" not in str(e) and str(e), name
            continue
        piece = composer.compose_one(Options(length=16, rng_seed=1, include_seed=True), seed)
        assert 16 <= piece.onsets <= 16 + cadence_margin(16), name
        assert all(21 <= p <= 108 for e in piece.events for p in e.pitches), name
        assert read_midi(piece.midi()).events, name


def test_stdout_carries_only_the_paths_whatever_a_library_writes():
    code = (
        "import os\n"
        "from bot.cli.compose import paths_only_on_stdout\n"
        "with paths_only_on_stdout():\n"
        "    os.write(1, b'fluidsynth: warning: noise from C\\n')\n"
        "    print('noise from Python')\n"
        "print('/out/piece.mid')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/out/piece.mid\n" and "noise from C" in r.stderr and "noise from Python" in r.stderr
