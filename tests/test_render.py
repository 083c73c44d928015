"""Tests for bot.render: real FluidSynth (through pyfluidsynth), a real soundfont and a real ffmpeg, the way a
user runs it; files are read back with soundfile and ffprobe."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from bot.errors import RenderError
from bot.music.events import Event
from bot.music.midi_out import midi_bytes
from bot.render.audio import (
    RATE_LADDER,
    SOUNDFONT_CANDIDATES,
    WAV_HEADER,
    ffmpeg_path,
    find_soundfont,
    opus_kbps,
    plan_wav,
)
from bot.render.files import RenderRequest, local_synth, midi_only, render_piece
from bot.render.loudness import CEILING
from bot.render.pianoroll import draw_piano_roll
from bot.render.pool import RenderPool
from bot.render.synth import Synth, check_soundfont

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MiB = 1024 * 1024


def _have_renderer() -> bool:
    try:
        find_soundfont()
        import fluidsynth  # noqa: F401
    except (RenderError, ImportError, OSError):
        return False
    return shutil.which("ffmpeg") is not None


needs_renderer = pytest.mark.skipif(
    not _have_renderer(), reason="needs libfluidsynth, ffmpeg and a GM soundfont"
)


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


def request(seconds: float, limit: int = 10 * MiB, name: str = "p", video: bool = False) -> RenderRequest:
    events = tuple(piece(seconds))
    return RenderRequest(name, midi_bytes(list(events)), events, 0, 100.0, name, limit, video)


def kinds(rendered) -> list[str]:
    return [f.name.rsplit(".", 1)[1] for f in rendered.files]


def sound(data: bytes) -> tuple[soundfile._SoundFileInfo, np.ndarray]:
    info = soundfile.info(io.BytesIO(data))
    samples, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return info, samples


def ffprobe(data: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "v.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    return json.loads(out.stdout)


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


def test_ffmpeg_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RenderError, match="ffmpeg is not installed"):
        ffmpeg_path()


def test_unreadable_soundfont_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVE" + bytes(100))
    for font in (garbage, tmp_path):  # not a SoundFont; a folder
        with pytest.raises(RenderError) as err:
            check_soundfont(font)
        assert "\n" not in str(err.value) and str(font) in str(err.value)


@needs_renderer
def test_a_soundfont_that_fluidsynth_refuses_is_one_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.sf2"
    cut.write_bytes(SOUNDFONT_CANDIDATES[0].read_bytes()[:4096] if SOUNDFONT_CANDIDATES[0].is_file() else b"")
    with pytest.raises(RenderError) as err:
        Synth(cut)
    assert "\n" not in str(err.value)


# -- fitting: pure arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "limit", "rate", "channels", "shortened"),
    [
        (20, 10 * MiB, 44100, 2, False),
        (100, 10 * MiB, 44100, 1, False),
        (173, 10 * MiB, 22050, 1, False),
        (20, 1 * MiB, 22050, 1, False),
        (600, 1 * MiB, 11025, 1, True),
    ],
)
def test_plan_wav(seconds: float, limit: int, rate: int, channels: int, shortened: bool) -> None:
    plan = plan_wav(seconds, limit)
    assert (plan.sample_rate, plan.channels, plan.shortened) == (rate, channels, shortened)
    assert WAV_HEADER + plan.frames * channels * 2 <= limit
    better = [rc for rc in RATE_LADDER if rc[0] * rc[1] > rate * channels]
    assert all(WAV_HEADER + seconds * r * c * 2 > limit for r, c in better)  # nothing better would fit


def test_plan_wav_refuses_a_limit_too_small_for_audio() -> None:
    with pytest.raises(RenderError, match="too small"):
        plan_wav(10, 1000)


def test_opus_rate_fits_the_limit() -> None:
    assert opus_kbps(120, 10 * MiB) == 128
    low = opus_kbps(600, 5 * MiB)
    assert low is not None and low < 128 and low * 1000 / 8 * 600 * 1.15 <= 5 * MiB
    assert opus_kbps(3600, 1 * MiB) is None


# -- one render, every file ------------------------------------------------------------------------


@needs_renderer
@pytest.mark.timeout(120)
def test_full_quality_when_it_fits() -> None:
    out = render_piece(request(20), local_synth(find_soundfont()))
    assert kinds(out) == ["mid", "ogg", "wav", "png"] and out.note == ""
    ogg, ogg_audio = sound(out.file("ogg").data)
    assert (ogg.format, ogg.subtype, ogg.samplerate, ogg.channels) == ("OGG", "OPUS", 48000, 2)
    wav, wav_audio = sound(out.file("wav").data)
    assert (wav.format, wav.subtype, wav.samplerate, wav.channels) == ("WAV", "PCM_16", 44100, 2)
    assert 20 <= wav.duration <= 20 + 4.5 and abs(ogg.duration - wav.duration) < 0.1  # one render, both files
    # Brought to -15 LUFS, its peaks limited to CEILING; resampling to 44.1 kHz may add a hair.
    assert 0.5 < np.abs(wav_audio).max() <= CEILING * 1.02 < 10 ** (-1 / 20)
    assert np.abs(ogg_audio).max() > 0.5
    assert np.abs(wav_audio[:, 0] - wav_audio[:, 1]).max() > 0  # real stereo, not one channel twice
    assert out.file("png").data[:8] == PNG_SIGNATURE
    assert out.wav.bytes == len(out.file("wav").data) and out.ogg.sample_rate == 48000


@needs_renderer
@pytest.mark.timeout(120)
def test_reduced_wav_keeps_a_full_quality_ogg_and_says_so() -> None:
    limit = 3 * MiB  # 40 s of 44.1 kHz stereo is 7 MB; mono at 32 kHz is 2.6 MB
    out = render_piece(request(40, limit), local_synth(find_soundfont()))
    assert kinds(out) == ["mid", "ogg", "wav", "png"]
    assert all(len(f.data) <= limit for f in out.files)
    wav, _ = sound(out.file("wav").data)
    ogg, _ = sound(out.file("ogg").data)
    assert (wav.samplerate, wav.channels) == (32000, 1) and (ogg.samplerate, ogg.channels) == (48000, 2)
    assert abs(wav.duration - ogg.duration) < 0.1  # reduced, not cut
    assert (
        out.note
        == "The .wav is 32 kHz mono to fit the upload limit. The .ogg is full quality (48 kHz stereo)."
    )


@needs_renderer
@pytest.mark.timeout(120)
def test_wav_cut_to_fit_and_the_note_says_what_holds_the_whole_piece() -> None:
    limit = 300_000  # 13 s of 11 kHz mono
    out = render_piece(request(40, limit), local_synth(find_soundfont()))
    assert all(len(f.data) <= limit for f in out.files)
    wav, samples = sound(out.file("wav").data)
    ogg, _ = sound(out.file("ogg").data)
    assert wav.samplerate == 11025 and wav.duration < 15 and ogg.duration > 40
    assert np.abs(samples[-100:]).max() < 0.05  # faded out, not chopped
    assert out.wav.shortened and out.note.startswith(f"The .wav holds the first {wav.duration:.0f} s")
    assert "the .ogg and the .mid have the whole piece" in out.note


@needs_renderer
@pytest.mark.timeout(120)
def test_an_empty_piece_still_renders() -> None:
    empty = RenderRequest("e", midi_bytes([]), (), 0, 100.0, "e", 10 * MiB)
    out = render_piece(empty, local_synth(find_soundfont()))
    assert kinds(out) == ["mid", "ogg", "wav", "png"]


@needs_renderer
@pytest.mark.timeout(120)
def test_a_bad_midi_file_is_a_render_error() -> None:
    bad = replace(request(5), midi=b"RIFF garbage, not a MIDI file")
    with pytest.raises(RenderError):
        render_piece(bad, local_synth(find_soundfont()))
    assert kinds(midi_only(bad, "x")) == ["mid"]


# -- video -----------------------------------------------------------------------------------------


@needs_renderer
@pytest.mark.timeout(180)
def test_video_scrolls_with_the_audio(tmp_path: Path) -> None:
    out = render_piece(request(30, video=True), local_synth(find_soundfont()))
    assert kinds(out) == ["mid", "ogg", "wav", "png", "mp4"]
    data = out.file("mp4").data
    assert len(data) <= 10 * MiB
    probe = ffprobe(data, tmp_path)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert set(streams) == {"video", "audio"}
    v, a = streams["video"], streams["audio"]
    assert (v["codec_name"], v["width"], v["height"], v["pix_fmt"]) == ("h264", 640, 360, "yuv420p")
    assert a["codec_name"] == "opus" and int(a["channels"]) == 2
    audio_s = sound(out.file("ogg").data)[0].duration
    assert abs(float(probe["format"]["duration"]) - audio_s) < 0.5
    assert abs(float(v["duration"]) - audio_s) < 0.5
    # The picture moves: a frame 10 s in differs from the first.
    frames = []
    for at in (0.5, 10.5):
        png = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-ss",
                str(at),
                "-i",
                str(tmp_path / "v.mp4"),
                "-frames:v",
                "1",
                "-f",
                "image2pipe",
                "-c:v",
                "png",
                "-",
            ],
            capture_output=True,
            check=True,
        ).stdout
        frames.append(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=int))
    assert np.abs(frames[0] - frames[1]).mean() > 1


@needs_renderer
@pytest.mark.timeout(120)
def test_video_left_out_when_it_cannot_fit() -> None:
    out = render_piece(request(40, 300_000, video=True), local_synth(find_soundfont()))
    assert "mp4" not in kinds(out) and "The video is left out" in out.note


# -- the pool --------------------------------------------------------------------------------------


@needs_renderer
@pytest.mark.timeout(240)
def test_pool_replaces_a_stuck_and_a_crashed_renderer() -> None:
    pool = RenderPool(find_soundfont(), size=1, timeout=10, target="tests.render_faults:render")
    pool.start()
    try:
        first = pool.pids()
        assert kinds(pool.render(request(5))) == ["mid", "ogg", "wav", "png"]
        with pytest.raises(RenderError, match="took too long"):
            pool.render(request(5, name="hang"))
        with pytest.raises(RenderError, match="crashed"):
            pool.render(request(5, name="crash"))
        assert pool.replaced == 2
        out = pool.render(request(5))  # waits for the replacement, which renders normally
        assert kinds(out) == ["mid", "ogg", "wav", "png"] and pool.pids().isdisjoint(first)
    finally:
        pool.close()


OWNER = """
import pickle, sys, tempfile, threading, time
tempfile.tempdir = sys.argv[1]
from bot.errors import RenderError
from bot.render.audio import find_soundfont
from bot.render.pool import RenderPool
hang, crash = pickle.load(open(sys.argv[2], "rb"))
pool = RenderPool(find_soundfont(), size=1, timeout=600, target="tests.render_faults:render")
pool.start()
try:
    pool.render(crash)
except RenderError:
    pass
threading.Thread(target=pool.render, args=(hang,), daemon=True).start()  # waits for the replacement
while any(t.name == "etude-render-restart" for t in threading.enumerate()):
    time.sleep(0.05)  # the thread that started the replacement has ended
print(*pool.pids(), flush=True)
time.sleep(600)
"""


@needs_renderer
@pytest.mark.timeout(240)
def test_render_processes_die_with_their_owner_even_mid_render(tmp_path: Path) -> None:
    """A worker killed outright (SIGKILL) while its pool renders: the render process, stuck in a render that
    never ends, dies with it, though a thread that has since ended started it (a replacement for one that
    crashed); its files are in the owner's temporary folder."""
    folder = tmp_path / "etude-worker-x"
    folder.mkdir()
    (tmp_path / "requests.pickle").write_bytes(
        pickle.dumps((request(5, name="hang"), request(5, name="crash")))
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(folder), str(tmp_path / "requests.pickle")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    child = 0
    try:
        child = int(owner.stdout.readline())
        for _ in range(1200):  # until the render is under way
            if (folder / f"hanging-{child}").exists():
                break
            time.sleep(0.1)
        assert (folder / f"hanging-{child}").exists()
        owner.kill()
        owner.wait()
        for _ in range(1200):
            if not _running(child):
                break
            time.sleep(0.1)
        assert not _running(child)
    finally:
        owner.kill()
        owner.wait()
        if child and _running(child):
            os.kill(child, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_renderer
@pytest.mark.timeout(120)
def test_pool_start_fails_in_one_line_on_an_unreadable_soundfont(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sf2"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00sfbk" + bytes(64))
    pool = RenderPool(bad, size=2)
    with pytest.raises(RenderError) as err:
        pool.start()
    assert "\n" not in str(err.value)
    assert not pool.pids()


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
