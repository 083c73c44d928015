"""MIDI to audio with FluidSynth, and events to a piano-roll picture.

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
import secrets
import shutil
import struct
import subprocess
import time
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.encoding import Event
from bot.errors import RenderError

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


@contextmanager
def _temp_path(folder: Path, name: str, suffix: str) -> Iterator[Path]:
    """A fresh file path in `folder`, removed afterwards unless it was renamed into place.

    Only the name is reserved: the writer creates the file, so it gets the usual permissions (mkstemp's are
    owner-only), and the random part keeps concurrent renders of the same name apart.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{name}.{secrets.token_hex(6)}{suffix}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


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
    with _temp_path(wav_path.parent, wav_path.name, ".raw") as raw:
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

    with _temp_path(wav_path.parent, wav_path.name, ".wav") as tmp:
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
    with _temp_path(ogg_path.parent, ogg_path.name, ".ogg") as tmp:
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


# -- piano roll ------------------------------------------------------------------------------------

SEED_COLOUR = "#d9822b"
COMPOSED_COLOUR = "#2b5fa8"
BLACK_KEYS = {1, 3, 6, 8, 10}


def _note_name(pitch: int) -> str:
    return f"C{pitch // 12 - 1}"  # MIDI 60 is C4


def _clock(seconds: float, _pos: object = None) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def draw_piano_roll(
    events: Sequence[Event],
    png_path: Path,
    *,
    seed_events: int = 0,
    tempo: float = 100.0,
    title: str = "",
    width_px: int = 1600,
    height_px: int = 600,
) -> Path:
    """Draw `events` as a piano roll (beats across, pitch up) to a PNG; the first `seed_events` stand out."""
    # Figure + FigureCanvasAgg, never pyplot: no global figure state, no backend switch for the process.
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    png_path = Path(png_path)
    if width_px < 200 or height_px < 150:
        raise ValueError(f"a piano roll needs at least 200x150 pixels, not {width_px}x{height_px}")
    if tempo <= 0:
        raise ValueError(f"tempo must be positive, not {tempo}")
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="white")
    ax = fig.add_subplot()
    ax.set_title(title or "Piano roll", loc="left", fontsize=12, fontweight="bold", pad=14)

    notes = [
        (e.onset, e.duration, p, e.velocity, i < seed_events) for i, e in enumerate(events) for p in e.pitches
    ]
    if not notes:
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            "no notes",
            ha="center",
            va="center",
            fontsize=20,
            color="#555555",
            transform=ax.transAxes,
        )
    else:
        onset, duration, pitch, velocity, is_seed = (np.array(col) for col in zip(*notes, strict=True))
        onset, duration, pitch = (
            onset.astype(float),
            np.maximum(duration.astype(float), 1e-3),
            pitch.astype(int),
        )
        end_beat = float((onset + duration).max())
        x0, x1 = min(0.0, float(onset.min())), max(end_beat, 4.0)
        low, high = int(pitch.min()) - 2, int(pitch.max()) + 2
        if high - low < 14:  # at least an octave, so a C line and its label always show
            mid = (low + high) // 2
            low, high = mid - 7, mid + 7
        ax.set_xlim(x0, x1)
        ax.set_ylim(low - 0.5, high + 0.5)

        # Black-key rows shaded, as on a keyboard: pitch is easier to follow across a long roll.
        rows = [p for p in range(low, high + 1) if p % 12 in BLACK_KEYS]
        ax.add_collection(
            PolyCollection(
                [[(x0, p - 0.5), (x1, p - 0.5), (x1, p + 0.5), (x0, p + 0.5)] for p in rows],
                facecolors="#f0f0f0",
                edgecolors="none",
                zorder=0,
            )
        )
        # Beat and bar lines, thinned out when they would be closer than a few pixels.
        px_per_beat = width_px * 0.85 / (x1 - x0)
        for step, colour, width in ((1, "#e2e2e2", 0.6), (4, "#c0c0c0", 1.0)):
            while step * px_per_beat < 6:
                step *= 4
            beats = np.arange(np.ceil(x0 / step) * step, x1 + 1e-9, step)
            segments = [[(b, low - 0.5), (b, high + 0.5)] for b in beats]
            ax.add_collection(LineCollection(segments, colors=colour, linewidths=width, zorder=1))
        cs = [p for p in range(low, high + 1) if p % 12 == 0]
        ax.add_collection(
            LineCollection(
                [[(x0, p - 0.5), (x1, p - 0.5)] for p in cs], colors="#8a8a8a", linewidths=0.8, zorder=1
            )
        )

        # One collection for all notes: thousands of notes draw in well under a second.
        left, right = onset, onset + duration
        bottom, top = pitch - 0.4, pitch + 0.4
        verts = np.stack(
            [
                np.stack([left, bottom], 1),
                np.stack([right, bottom], 1),
                np.stack([right, top], 1),
                np.stack([left, top], 1),
            ],
            axis=1,
        )
        base = np.where(is_seed[:, None], np.array(to_rgba(SEED_COLOUR)), np.array(to_rgba(COMPOSED_COLOUR)))
        faces = base.copy()
        faces[:, 3] = 0.35 + 0.65 * np.clip(velocity.astype(float), 1, 127) / 127  # louder is more solid
        ax.add_collection(
            PolyCollection(
                verts, facecolors=faces, edgecolors=base * [0.7, 0.7, 0.7, 1], linewidths=0.4, zorder=2
            )
        )
        if 0 < seed_events < len(events):
            start = min(e.onset for e in events[seed_events:])
            ax.axvline(start, color=SEED_COLOUR, linestyle="--", linewidth=1.2, zorder=3)
        if seed_events > 0:
            handles = [Patch(color=SEED_COLOUR, label="seed")]
            if seed_events < len(events):
                handles.append(Patch(color=COMPOSED_COLOUR, label="composed"))
            # In the title row, where it can never hide a note.
            ax.legend(
                handles=handles,
                loc="lower center",
                bbox_to_anchor=(0.5, 1.04),
                ncol=2,
                frameon=False,
                fontsize=9,
            )

        # Octave lines sit on the B|C boundary, as on a keyboard; each label names the C row above its line.
        ax.set_yticks(cs, [_note_name(p) for p in cs])
        ax.tick_params(axis="y", length=0, labelsize=9, colors="#333333")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=16, steps=[1, 2, 4, 8, 10], integer=True))
        ax.tick_params(axis="x", length=3, labelsize=9, colors="#333333")
        ax.set_xlabel("beats (quarter notes)", fontsize=10)
        # Clock time on top, so the picture can be followed while listening to the audio.
        clock = ax.secondary_xaxis("top", functions=(lambda b: b * 60 / tempo, lambda s: s * tempo / 60))
        clock.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 1.5, 2, 3, 5, 6, 10], integer=True))
        clock.xaxis.set_major_formatter(FuncFormatter(_clock))
        clock.tick_params(length=2, labelsize=8, colors="#666666")
        seconds = (end_beat - x0) * 60 / tempo
        ax.set_title(
            f"{len(events)} events, {len(notes)} notes, {_clock(seconds)} at {tempo:g} bpm",
            loc="right",
            fontsize=9,
            color="#555555",
            pad=14,
        )
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.1, top=0.88)

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with _temp_path(png_path.parent, png_path.name, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        os.replace(tmp, png_path)
    return png_path
