"""Tests for bot.render: real FluidSynth and a real soundfont, the way a user runs it."""

from __future__ import annotations

import shutil
import wave
from collections.abc import Sequence
from pathlib import Path

import mido
import numpy as np
import pytest
from PIL import Image

from bot.errors import RenderError
from bot.music.encoding import Event
from bot.render.audio import (
    SOUNDFONT_CANDIDATES,
    AudioInfo,
    find_soundfont,
    fluidsynth_path,
    render_ogg,
    render_wav,
    supports_ogg,
)
from bot.render.pianoroll import draw_piano_roll

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _have_renderer() -> bool:
    try:
        find_soundfont()
    except RenderError:
        return False
    return shutil.which("fluidsynth") is not None


needs_fluidsynth = pytest.mark.skipif(not _have_renderer(), reason="needs fluidsynth and a GM soundfont")


def write_midi(events: Sequence[Event], path: Path, tempo: float = 100.0) -> Path:
    """A one-track MIDI file of `events` (bot.midi is not used, so these tests stand alone)."""
    ticks = 480
    messages = []  # (tick, order, message): note-offs before note-ons at the same tick
    for e in events:
        on, off = round(e.onset * ticks), round((e.onset + e.duration) * ticks)
        for p in e.pitches:
            messages.append((on, 1, mido.Message("note_on", note=p, velocity=e.velocity)))
            messages.append((off, 0, mido.Message("note_off", note=p, velocity=0)))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0)])
    now = 0
    for tick, _, msg in sorted(messages, key=lambda m: (m[0], m[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    mid = mido.MidiFile(ticks_per_beat=ticks)
    mid.tracks.append(track)
    mid.save(path)
    return path


def piece(seconds: float, tempo: float = 100.0) -> list[Event]:
    """A C-major scale over chords, one event per beat, lasting about `seconds`."""
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    chords = [(48, 52, 55), (53, 57, 60), (55, 59, 62), (48, 55, 64)]
    events = []
    for beat in range(round(seconds * tempo / 60)):
        events.append(Event(float(beat), 1.0, (scale[beat % 8],), 70 + beat % 40))
        if beat % 4 == 0:
            events.append(Event(float(beat), 4.0, chords[beat // 4 % 4], 60))
    return sorted(events, key=lambda e: (e.onset, e.duration))


def read_wav(path: Path) -> tuple[int, int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), w.getnchannels(), samples.reshape(-1, w.getnchannels())


# -- finding the tools -----------------------------------------------------------------------------


def test_soundfont_candidates_start_with_fluidr3() -> None:
    assert SOUNDFONT_CANDIDATES[0].name == "FluidR3_GM.sf2"


def test_find_soundfont_explicit(tmp_path: Path) -> None:
    font = tmp_path / "mine.sf2"
    font.write_bytes(b"RIFF")
    assert find_soundfont(font) == font
    assert find_soundfont(str(font)) == font


def test_find_soundfont_missing_explicit_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sf2"
    with pytest.raises(RenderError, match="nope.sf2"):
        find_soundfont(missing)


def test_find_soundfont_none_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("bot.render.audio.SOUNDFONT_CANDIDATES", (tmp_path / "a.sf2", tmp_path / "b.sf2"))
    with pytest.raises(RenderError, match="fluid-soundfont-gm"):
        find_soundfont()


def test_fluidsynth_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError, match="FluidSynth is not installed"):
        fluidsynth_path()
    midi = write_midi(piece(2), tmp_path / "p.mid")
    with pytest.raises(RenderError, match="FluidSynth is not installed"):
        render_wav(midi, tmp_path / "p.wav", soundfont=SOUNDFONT_CANDIDATES[0])
    assert not (tmp_path / "p.wav").exists()


# -- WAV -------------------------------------------------------------------------------------------


@needs_fluidsynth
@pytest.mark.timeout(120)
def test_render_wav_full_quality(tmp_path: Path) -> None:
    midi = write_midi(piece(10), tmp_path / "p.mid")
    info = render_wav(midi, tmp_path / "p.wav")
    assert isinstance(info, AudioInfo)
    assert (info.sample_rate, info.channels, info.format, info.shortened) == (44100, 2, "wav", False)
    rate, channels, samples = read_wav(info.path)
    assert (rate, channels) == (44100, 2)
    assert info.bytes == info.path.stat().st_size <= 10 * 1024 * 1024
    assert info.seconds == pytest.approx(len(samples) / rate)
    # The notes, plus a release tail but no long dead air.
    length = mido.MidiFile(midi).length
    assert length <= info.seconds <= length + 3.5
    assert np.abs(samples).max() > 10_000  # normalised, so clearly audible
    assert np.abs(samples[: rate // 2]).max() > 1000  # the first note sounds at once
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


@needs_fluidsynth
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("max_bytes", "rate", "shortened"),
    [(3_000_000, 44100, False), (1_000_000, 16000, False), (200_000, 11025, True)],
)
def test_render_wav_lowers_quality_to_fit(tmp_path: Path, max_bytes: int, rate: int, shortened: bool) -> None:
    midi = write_midi(piece(20), tmp_path / "p.mid")  # about 22 s and the tail: 4 MB as 44.1 kHz stereo
    info = render_wav(midi, tmp_path / "p.wav", max_bytes=max_bytes)
    assert info.bytes == info.path.stat().st_size <= max_bytes
    assert (info.sample_rate, info.channels, info.shortened) == (rate, 1, shortened)
    assert read_wav(info.path)[:2] == (rate, 1)
    samples = read_wav(info.path)[2]
    assert len(samples) > 0 and np.abs(samples).max() > 1000
    if not shortened:
        assert info.seconds >= mido.MidiFile(midi).length


@needs_fluidsynth
@pytest.mark.timeout(120)
def test_render_wav_cuts_what_cannot_fit(tmp_path: Path) -> None:
    midi = write_midi(piece(20), tmp_path / "p.mid")
    out = tmp_path / "p.wav"
    out.write_bytes(b"an older file is replaced")
    info = render_wav(midi, out, max_bytes=30_000)
    assert info.shortened
    assert info.bytes == out.stat().st_size <= 30_000
    rate, channels, samples = read_wav(out)
    assert (rate, channels) == (11025, 1)
    assert info.seconds == pytest.approx(len(samples) / rate)
    assert info.seconds > 1
    assert np.abs(samples).max() > 1000
    assert np.abs(samples[-20:]).max() < 200  # faded out, not cut off with a click


def test_render_wav_refuses_a_limit_too_small_for_audio(tmp_path: Path) -> None:
    midi = write_midi(piece(2), tmp_path / "p.mid")
    with pytest.raises(RenderError, match="too small"):
        render_wav(midi, tmp_path / "p.wav", max_bytes=1000)


@needs_fluidsynth
@pytest.mark.timeout(60)
def test_render_wav_bad_midi(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"this is not a MIDI file")
    with pytest.raises(RenderError, match="MIDI"):
        render_wav(bad, tmp_path / "bad.wav")
    with pytest.raises(RenderError, match="not found"):
        render_wav(tmp_path / "missing.mid", tmp_path / "bad.wav")
    assert not (tmp_path / "bad.wav").exists()


@needs_fluidsynth
@pytest.mark.timeout(60)
def test_render_wav_timeout(tmp_path: Path) -> None:
    midi = write_midi(piece(60), tmp_path / "p.mid")
    with pytest.raises(RenderError, match="took too long"):
        render_wav(midi, tmp_path / "p.wav", timeout=0.001)
    assert list(tmp_path.iterdir()) == [midi]


# -- Ogg -------------------------------------------------------------------------------------------


def _ogg_supported() -> bool:
    return _have_renderer() and supports_ogg()


@pytest.mark.skipif(not _ogg_supported(), reason="this FluidSynth's libsndfile cannot write Ogg Vorbis")
@pytest.mark.timeout(120)
def test_render_ogg(tmp_path: Path) -> None:
    midi = write_midi(piece(10), tmp_path / "p.mid")
    info = render_ogg(midi, tmp_path / "p.ogg")
    assert info.format == "ogg" and not info.shortened
    assert info.path.read_bytes()[:4] == b"OggS"
    assert (info.sample_rate, info.channels) == (44100, 2)
    length = mido.MidiFile(midi).length
    assert length <= info.seconds <= length + 4
    # Far smaller than the same audio as a WAV: that is what the fallback is for.
    assert info.bytes == info.path.stat().st_size < 44100 * 2 * 2 * info.seconds / 5


def test_render_ogg_without_support(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stand-in FluidSynth whose libsndfile knows no Ogg, as on some minimal builds.
    fake = tmp_path / "bin" / "fluidsynth"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho \"-T options (audio file type):\"\necho \"   'aiff','au','raw','wav'\"\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert not supports_ogg()
    midi = write_midi(piece(2), tmp_path / "p.mid")
    font = tmp_path / "font.sf2"
    font.write_bytes(b"RIFF")
    with pytest.raises(RenderError, match="Ogg"):
        render_ogg(midi, tmp_path / "p.ogg", soundfont=font)
    assert not (tmp_path / "p.ogg").exists()


# -- piano roll ------------------------------------------------------------------------------------


def check_png(path: Path, width: int, height: int) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        w, h = image.size
    assert abs(w - width) <= 2 and abs(h - height) <= 2


@pytest.mark.timeout(60)
def test_piano_roll(tmp_path: Path) -> None:
    out = draw_piano_roll(piece(20), tmp_path / "roll.png", title="scale and chords")
    assert out == tmp_path / "roll.png"
    check_png(out, 1600, 600)


@pytest.mark.timeout(60)
def test_piano_roll_with_seed_and_size(tmp_path: Path) -> None:
    events = piece(20)
    plain = draw_piano_roll(events, tmp_path / "plain.png", width_px=800, height_px=400)
    seeded = draw_piano_roll(events, tmp_path / "seeded.png", seed_events=10, width_px=800, height_px=400)
    check_png(seeded, 800, 400)
    with Image.open(plain) as a, Image.open(seeded) as b:
        pixels_a = np.asarray(a.convert("RGB"), dtype=int)
        pixels_b = np.asarray(b.convert("RGB"), dtype=int)
    assert (pixels_a != pixels_b).any()  # the seed is drawn differently
    # The seed colour is orange: far more red than blue, which the composed notes never are.
    orange = (pixels_b[..., 0] - pixels_b[..., 2] > 80).sum()
    assert orange > 100
    assert (pixels_a[..., 0] - pixels_a[..., 2] > 80).sum() < orange / 10


@pytest.mark.timeout(60)
def test_piano_roll_empty(tmp_path: Path) -> None:
    out = draw_piano_roll([], tmp_path / "empty.png", title="nothing")
    check_png(out, 1600, 600)


@pytest.mark.timeout(60)
def test_piano_roll_many_events(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    events = [
        Event(
            i * 0.25,
            0.5,
            tuple(sorted({int(p) for p in rng.integers(36, 90, 3)})),
            int(rng.integers(30, 127)),
        )
        for i in range(2000)
    ]
    out = draw_piano_roll(events, tmp_path / "many.png", seed_events=200)
    check_png(out, 1600, 600)
