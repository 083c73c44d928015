"""MIDI to audio with FluidSynth.

FluidSynth runs as a subprocess with a timeout, so a hostile or huge piece cannot hang a worker. The WAV is
sized to an upload limit: the sample rate and channels are chosen from the piece's length before rendering,
and audio that still does not fit is cut with a fade-out. Files are written next to their destination and
renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import struct
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.errors import RenderError
from bot.render.atomic import temp_path

log = logging.getLogger(__name__)

SOUNDFONT_CANDIDATES: tuple[Path, ...] = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # Debian, Ubuntu: fluid-soundfont-gm
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),  # Fedora fluid-soundfont-gm, Arch soundfont-fluid
    Path("/usr/share/soundfonts/default.sf2"),  # Fedora, Arch: FluidSynth's compiled-in default
    Path("/usr/share/sounds/sf2/default-GM.sf2"),  # Debian alternatives link
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),  # Debian, Ubuntu: timgm6mb-soundfont
    Path("/usr/share/soundfonts/FluidR3_GS.sf2"),
    Path("/usr/share/sounds/sf2/FluidR3_GS.sf2"),
    Path("/opt/homebrew/share/soundfonts/default.sf2"),  # macOS Homebrew (Apple silicon)
    Path("/usr/local/share/soundfonts/default.sf2"),  # macOS Homebrew (Intel), FreeBSD, source installs
    Path("~/.fluidsynth/default_sound_font.sf2").expanduser(),  # midi2audio's default
    Path("/usr/share/sounds/sf3/default-GM.sf3"),  # needs a FluidSynth built with Ogg/Vorbis
)

# Sample rates and channels tried in order until the WAV fits the byte limit: quality first.
RATE_LADDER: tuple[tuple[int, int], ...] = (
    (44100, 2),
    (44100, 1),
    (32000, 1),
    (22050, 1),
    (16000, 1),
    (11025, 1),
)
WAV_HEADER = 44  # bytes of a canonical 16-bit PCM WAV header, as the `wave` module writes it
TAIL_SECONDS = 2.5  # FluidSynth renders about this long after the last note-off (release and reverb)
KEEP_SILENCE = 2.0  # seconds kept after the last audible sample: room for the decay, no long dead air
SILENCE_DB = -60.0  # below the peak by this much counts as silence
FADE_SECONDS = 0.5  # fade-out of audio cut to fit
MIN_SECONDS = 1.0  # a byte limit that cannot hold this much audio even at the lowest rate is refused
PEAK = 0.89  # -1 dBFS: loud, with headroom for players that resample
MAX_BOOST = 8.0  # a near-silent piece is not amplified into noise
RENDER_GAIN = 0.5  # FluidSynth gain for the float render; the level is set afterwards by normalising
OGG_GAIN = 0.8  # Ogg is written by FluidSynth directly, so its level is fixed: loud without clipping chords


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """The soundfont to render with: `explicit` (the SOUNDFONT setting) if given, else a known GM one."""
    if explicit is not None and str(explicit).strip():
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise RenderError(f"soundfont not found: {path}")
        return path
    for path in SOUNDFONT_CANDIDATES:
        if path.is_file():
            return path
    raise RenderError("no General MIDI soundfont found: install fluid-soundfont-gm or set SOUNDFONT")


def fluidsynth_path() -> str:
    """The FluidSynth executable on PATH."""
    path = shutil.which("fluidsynth")
    if path is None:
        raise RenderError("FluidSynth is not installed: apt-get install fluidsynth")
    return path


@dataclass(frozen=True)
class AudioInfo:
    """What was written: where, in what shape, and whether it had to be cut to fit."""

    path: Path
    sample_rate: int
    channels: int
    seconds: float  # duration of the written audio
    bytes: int
    shortened: bool  # True when the audio had to be cut to fit max_bytes
    format: str  # "wav" or "ogg"


# -- FluidSynth ------------------------------------------------------------------------------------


def _run_fluidsynth(args: list[str], out: Path, timeout: float) -> None:
    """Run FluidSynth to write `out`; RenderError with a one-line reason when it fails or takes too long.

    midi2audio, the usual wrapper, calls FluidSynth through `subprocess.call` with no timeout and no way to
    see its errors, so FluidSynth is called here directly.
    """
    try:
        proc = subprocess.run(
            [fluidsynth_path(), *args],
            check=False,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RenderError("rendering the audio took too long") from None
    except OSError as e:
        raise RenderError(f"FluidSynth could not be started: {e.strerror or e}") from None
    # FluidSynth exits 0 after some failures (a format it cannot write, an unwritable file), so the output
    # file is what decides.
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        reason = (errors or lines or [f"exit status {proc.returncode}"])[0]
        raise RenderError(f"FluidSynth failed: {reason[:200]}")


@functools.cache
def _file_types(fluidsynth: str) -> frozenset[str]:
    """The audio file types (`-T`) this FluidSynth's libsndfile can write."""
    try:
        proc = subprocess.run(
            [fluidsynth, "-T", "help"], check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(re.findall(r"'([\w.+-]+)'", proc.stdout + proc.stderr))  # "'aiff','au',..."


def _ogg_type() -> str | None:
    """FluidSynth's `-T` name for Ogg Vorbis ("oga" with newer libsndfile, "ogg" with older), if any."""
    types = _file_types(fluidsynth_path())
    return next((t for t in ("oga", "ogg") if t in types), None)


def supports_ogg() -> bool:
    """Whether FluidSynth here can write Ogg Vorbis."""
    return _ogg_type() is not None


def _midi_seconds(midi_path: Path) -> float:
    """The playing time of a MIDI file, without the release tail."""
    import mido  # only the audio path needs it

    if not midi_path.is_file():
        raise RenderError(f"MIDI file not found: {midi_path}")
    try:
        return float(mido.MidiFile(midi_path).length)
    # mido raises many kinds on malformed files (and TypeError for type-2 files); the reason is enough.
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as e:
        raise RenderError(f"cannot read the MIDI file: {e}") from None


# -- WAV -------------------------------------------------------------------------------------------


def _wav_bytes(seconds: float, rate: int, channels: int) -> int:
    return WAV_HEADER + int(np.ceil(seconds * rate)) * channels * 2


def _choose_format(seconds: float, max_bytes: int) -> tuple[int, int]:
    """The best (sample rate, channels) whose 16-bit WAV of `seconds` fits `max_bytes`, else the lowest."""
    for rate, channels in RATE_LADDER:
        if _wav_bytes(seconds, rate, channels) <= max_bytes:
            return rate, channels
    return RATE_LADDER[-1]


def _to_pcm16(audio: np.ndarray) -> bytes:
    """Float audio (frames x channels) to normalised, interleaved little-endian 16-bit samples."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    gain = min(PEAK / peak, MAX_BOOST) if peak > 0 else 1.0
    pcm = np.clip(np.rint(audio * (gain * 32767.0)), -32768, 32767).astype("<i2")
    return pcm.tobytes()


def render_wav(
    midi_path: Path,
    wav_path: Path,
    max_bytes: int = 10 * 1024 * 1024,
    *,
    soundfont: Path | None = None,
    timeout: float = 120.0,
) -> AudioInfo:
    """Render `midi_path` to a 16-bit WAV no larger than `max_bytes`, lowering quality before cutting."""
    midi_path, wav_path = Path(midi_path), Path(wav_path)
    lowest_rate, lowest_channels = RATE_LADDER[-1]
    if max_bytes < _wav_bytes(MIN_SECONDS, lowest_rate, lowest_channels):
        raise RenderError(f"a limit of {max_bytes} bytes is too small for any audio")
    font = find_soundfont(soundfont)
    estimate = _midi_seconds(midi_path) + TAIL_SECONDS
    rate, channels = _choose_format(estimate, max_bytes)

    started = time.perf_counter()
    with temp_path(wav_path.parent, wav_path.name, ".raw") as raw:
        # Raw float output: FluidSynth's own 16-bit output clips loud chords, and the level is set by
        # normalising afterwards instead. It is always stereo.
        args = ["-ni", "-g", str(RENDER_GAIN), "-r", str(rate), "-T", "raw", "-O", "float", "-E", "little"]
        _run_fluidsynth([*args, "-F", str(raw), str(font), str(midi_path)], raw, timeout)
        render_s = time.perf_counter() - started
        rendered_audio_s = raw.stat().st_size / 8 / rate  # float32 stereo
        # Never read more than could be kept even in mono: a piece far too long for the limit stays cheap.
        max_frames = (max_bytes - WAV_HEADER) // 2
        audio = np.fromfile(raw, dtype="<f4", count=2 * max_frames + 2)
    audio = audio[: len(audio) // 2 * 2].reshape(-1, 2)

    level = np.abs(audio).max(axis=1) if len(audio) else np.zeros(0, np.float32)
    peak = float(level.max()) if len(level) else 0.0
    loud = np.flatnonzero(level > max(peak * 10 ** (SILENCE_DB / 20), 1e-6))
    end = (int(loud[-1]) + 1 if len(loud) else 0) + int(KEEP_SILENCE * rate)
    audio = audio[:end]

    # The estimate can be short (tempo changes mido missed, long releases): mono is a cheaper fix than a cut.
    if channels == 2 and _wav_bytes(len(audio) / rate, rate, 2) > max_bytes:
        channels = 1
    if channels == 1:
        audio = audio.mean(axis=1, keepdims=True)
    max_frames = (max_bytes - WAV_HEADER) // (2 * channels)
    shortened = len(audio) > max_frames
    if shortened:
        audio = audio[:max_frames].copy()
        fade = min(int(FADE_SECONDS * rate), len(audio) // 2)
        if fade > 0:
            audio[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]

    with temp_path(wav_path.parent, wav_path.name, ".wav") as tmp:
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(_to_pcm16(audio))
        os.replace(tmp, wav_path)
    info = AudioInfo(
        path=wav_path,
        sample_rate=rate,
        channels=channels,
        seconds=len(audio) / rate,
        bytes=wav_path.stat().st_size,
        shortened=shortened,
        format="wav",
    )
    elapsed = time.perf_counter() - started
    log.info(
        "rendered %s: %.1f s at %d Hz x%d, %d bytes%s in %.2f s (FluidSynth %.0fx real time)",
        wav_path.name,
        info.seconds,
        rate,
        channels,
        info.bytes,
        ", shortened" if shortened else "",
        elapsed,
        rendered_audio_s / render_s,
    )
    return info


# -- Ogg -------------------------------------------------------------------------------------------


def _ogg_shape(path: Path) -> tuple[int, int, float]:
    """(sample rate, channels, seconds) of an Ogg Vorbis file, from its first and last page headers."""
    data = path.read_bytes()
    ident = data.find(b"\x01vorbis")
    if not data.startswith(b"OggS") or ident < 0:
        raise RenderError("FluidSynth wrote no Ogg Vorbis audio")
    channels = data[ident + 11]
    rate = struct.unpack_from("<I", data, ident + 12)[0]
    last = data.rfind(b"OggS")
    granule = struct.unpack_from("<q", data, last + 6)[0]  # samples per channel up to the end of that page
    return rate, channels, max(granule, 0) / rate if rate else 0.0


def render_ogg(
    midi_path: Path,
    ogg_path: Path,
    *,
    soundfont: Path | None = None,
    timeout: float = 120.0,
) -> AudioInfo:
    """Render `midi_path` to Ogg Vorbis at 44.1 kHz stereo: the compact fallback when a WAV is too poor."""
    midi_path, ogg_path = Path(midi_path), Path(ogg_path)
    font = find_soundfont(soundfont)
    ogg_type = _ogg_type()
    if ogg_type is None:
        raise RenderError("this FluidSynth cannot write Ogg Vorbis (its libsndfile lacks Ogg support)")
    _midi_seconds(midi_path)  # a readable error for a bad file, before FluidSynth's
    started = time.perf_counter()
    with temp_path(ogg_path.parent, ogg_path.name, ".ogg") as tmp:
        args = ["-ni", "-g", str(OGG_GAIN), "-r", "44100", "-T", ogg_type]
        _run_fluidsynth([*args, "-F", str(tmp), str(font), str(midi_path)], tmp, timeout)
        rate, channels, seconds = _ogg_shape(tmp)
        os.replace(tmp, ogg_path)
    info = AudioInfo(ogg_path, rate, channels, seconds, ogg_path.stat().st_size, False, "ogg")
    log.info(
        "rendered %s: %.1f s Ogg Vorbis, %d bytes in %.2f s",
        ogg_path.name,
        seconds,
        info.bytes,
        time.perf_counter() - started,
    )
    return info
