"""Audio files from one render held in memory: an Ogg Opus listening copy and a WAV fitted to a byte limit.

FluidSynth plays each piece once (`bot.render.synth`); ffmpeg encodes both files from those samples, in
two runs at once, so on two cores the WAV adds no time. Opus through ffmpeg, not libsndfile: on a
3-minute piece libsndfile's Opus writer took 3.6-4.0 CPU seconds and its Vorbis writer 1.7-2.0, ffmpeg's
libopus 0.6-1.7 by complexity and packet length (README, "Rendering").
`soundfile` reads what was written back, so what a reply says about a file is what the file holds.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.errors import RenderError
from bot.paths import checked_file

log = logging.getLogger(__name__)

SOUNDFONT_MAX_BYTES = 4 * 2**30  # the largest General MIDI soundfonts are about 1 GiB
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
WAV_HEADER = 44  # bytes of a canonical 16-bit PCM WAV header (ffmpeg writes one with -bitexact)
KEEP_SILENCE = 2.0  # seconds kept after the last audible sample: room for the decay, no long dead air
SILENCE_DB = -60.0  # below the peak by this much counts as silence
FADE_SECONDS = 0.5  # fade-out of audio cut to fit
MIN_SECONDS = 1.0  # a byte limit that cannot hold this much audio even at the lowest rate is refused
OPUS_RATE = 48000  # Opus codes at 48 kHz, the rate FluidSynth renders at: nothing is resampled
OPUS_KBPS = 128  # stereo music: Xiph's range for near-transparent is 96-128
OPUS_MIN_KBPS = 24  # below this a long piece's listening copy is left out rather than made to fit
# 0.6 of the CPU time of the default 10 (0.8 s against 1.3 s for 3 minutes); at 128 kb/s the bit rate
# leaves the encoder room to spare, and complexity matters most when bits are scarce.
OPUS_COMPLEXITY = 0
# Packets of three 20 ms frames: the same frames and bytes as 20 ms packets (3.20 MB against 3.19 for a
# 200-second piece) for three quarters of the CPU time (0.63 s against 0.83).
OPUS_FRAME_MS = 60
ENCODE_TIMEOUT = 120.0


def find_soundfont(explicit: str | Path | None = None) -> Path:
    """The soundfont to render with: `explicit` (the SOUNDFONT setting) if given, else a known GM one."""
    if explicit is not None and str(explicit).strip():
        return checked_file(Path(explicit).expanduser(), "the soundfont", SOUNDFONT_MAX_BYTES, RenderError)
    for path in SOUNDFONT_CANDIDATES:
        if path.is_file():
            return path
    raise RenderError("no General MIDI soundfont found: install fluid-soundfont-gm or set SOUNDFONT")


def ffmpeg_path() -> str:
    """The ffmpeg executable on PATH."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise RenderError("ffmpeg is not installed: apt-get install ffmpeg")
    return path


def run_ffmpeg(
    args: list[str], timeout: float, slow: str, failed: str, stdin: bytes | memoryview | None = None
) -> None:
    """One quiet ffmpeg run on `args`, never reading the terminal; a `RenderError` when it cannot start,
    takes longer than `timeout` (saying `slow`) or fails (`failed`, then ffmpeg's last line)."""
    try:
        proc = subprocess.run(
            [ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(slow) from None
    except OSError as e:
        raise RenderError(f"ffmpeg could not be started: {e.strerror or e}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or [f"status {proc.returncode}"]
        raise RenderError(f"{failed}: {lines[-1][:200]}")


@dataclass(frozen=True)
class AudioInfo:
    """What an audio file holds, as `soundfile` reads it back."""

    sample_rate: int
    channels: int
    seconds: float
    bytes: int
    shortened: bool = False  # cut to fit its limit; the .mid has the whole piece

    @classmethod
    def of(cls, data: bytes, shortened: bool = False) -> AudioInfo:
        import soundfile

        try:
            info = soundfile.info(io.BytesIO(data))
        except (RuntimeError, soundfile.LibsndfileError) as e:
            raise RenderError(f"the audio encoder wrote an unreadable file: {e}") from None
        return cls(info.samplerate, info.channels, info.duration, len(data), shortened)

    def describe(self) -> str:
        return f"{self.sample_rate / 1000:g} kHz {'mono' if self.channels == 1 else 'stereo'}"


def peak(audio: np.ndarray) -> float:
    # max and min over the flat array: no temporary copy, and 20 times faster than abs().max(axis=1).
    return float(max(audio.max(), -audio.min())) if audio.size else 0.0


def trim(audio: np.ndarray, rate: int) -> np.ndarray:
    """`audio` without the silence after the last audible sample (beyond KEEP_SILENCE)."""
    if not len(audio):
        return audio
    threshold = max(peak(audio) * 10 ** (SILENCE_DB / 20), 1e-6)
    flat = audio.reshape(-1)
    last = -1
    block = rate * audio.shape[1]  # a second at a time from the end: the silence is short, the piece long
    for stop in range(len(flat), 0, -block):
        loud = np.flatnonzero(np.abs(flat[max(stop - block, 0) : stop]) > threshold)
        if len(loud):
            last = max(stop - block, 0) + int(loud[-1])
            break
    end = (last // audio.shape[1] + 1 if last >= 0 else 0) + int(KEEP_SILENCE * rate)
    return audio[:end]


def wav_bytes(seconds: float, rate: int, channels: int) -> int:
    return WAV_HEADER + int(np.ceil(seconds * rate)) * channels * 2


@dataclass(frozen=True)
class WavPlan:
    """How the WAV of a piece fits its limit: at what rate, in how many channels, how many seconds kept."""

    sample_rate: int
    channels: int
    frames: int  # at most this many are written: the byte limit, whatever the resampler rounds to
    shortened: bool

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def plan_wav(seconds: float, max_bytes: int) -> WavPlan:
    """The best (rate, channels) whose 16-bit WAV of `seconds` fits `max_bytes`; else the lowest, cut."""
    lowest_rate, lowest_channels = RATE_LADDER[-1]
    if max_bytes < wav_bytes(MIN_SECONDS, lowest_rate, lowest_channels):
        raise RenderError(f"a limit of {max_bytes} bytes is too small for any audio")
    for rate, channels in RATE_LADDER:
        if wav_bytes(seconds, rate, channels) <= max_bytes:
            return WavPlan(rate, channels, int(np.ceil(seconds * rate)), False)
    frames = (max_bytes - WAV_HEADER) // (2 * lowest_channels)
    return WavPlan(lowest_rate, lowest_channels, frames, True)


def opus_kbps(seconds: float, max_bytes: int) -> int | None:
    """The Opus bit rate for a listening copy of `seconds` within `max_bytes`; None when none would do."""
    # Opus is variable-rate: 15% headroom over the nominal rate plus the Ogg pages' overhead.
    fits = int(max_bytes * 8 / 1000 / 1.15 / max(seconds, 1.0)) - 2
    kbps = min(OPUS_KBPS, fits)
    return kbps if kbps >= OPUS_MIN_KBPS else None


def _ffmpeg_to_bytes(
    pcm: bytes | memoryview, rate: int, output: list[str], suffix: str, timeout: float
) -> bytes:
    """One ffmpeg run from float stereo `pcm` to a file made by `output` (codec and format arguments)."""
    with tempfile.TemporaryDirectory(prefix="etude-audio-") as tmp:
        path = Path(tmp) / f"a.{suffix}"
        args = ["-threads", "1", "-f", "f32le", "-ar", str(rate), "-ac", "2", "-i", "pipe:0", *output]
        run_ffmpeg(
            [*args, str(path)], timeout, "encoding the audio took too long", "ffmpeg failed", stdin=pcm
        )
        return path.read_bytes()


def _opus_args(kbps: int) -> list[str]:
    return [
        "-c:a", "libopus", "-b:a", f"{kbps}k", "-compression_level", str(OPUS_COMPLEXITY),
        "-frame_duration", str(OPUS_FRAME_MS), "-ar", str(OPUS_RATE), "-f", "ogg",
    ]  # fmt: skip


def _wav_args(wav: WavPlan) -> list[str]:
    wav_filter = f"aresample={wav.sample_rate},atrim=end_sample={wav.frames}"
    if wav.channels == 1:  # the average of both sides: ffmpeg's own down-mix can clip a loud chord
        wav_filter += ",pan=mono|c0=0.5*c0+0.5*c1"
    if wav.shortened:
        fade = min(FADE_SECONDS, wav.seconds / 2)
        wav_filter += f",afade=t=out:st={wav.seconds - fade:.6f}:d={fade:.6f}"
    return [
        "-af", wav_filter, "-c:a", "pcm_s16le", "-ar", str(wav.sample_rate), "-ac", str(wav.channels),
        "-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1", "-f", "wav",
    ]  # fmt: skip


def encode(
    audio: np.ndarray, rate: int, wav: WavPlan, kbps: int | None, timeout: float = ENCODE_TIMEOUT
) -> tuple[bytes | None, bytes]:
    """(Ogg Opus at `kbps` or None, WAV as `wav` plans) from float stereo: two ffmpeg runs at once, each
    on a core of its own, the WAV's in a thread while this one waits for the Opus."""
    pcm = memoryview(np.ascontiguousarray(audio, "<f4")).cast("B")  # the samples themselves, not a copy
    with ThreadPoolExecutor(1, thread_name_prefix="etude-wav") as side:
        wav_data = side.submit(_ffmpeg_to_bytes, pcm, rate, _wav_args(wav), "wav", timeout)
        ogg_data = _ffmpeg_to_bytes(pcm, rate, _opus_args(kbps), "ogg", timeout) if kbps is not None else None
        return ogg_data, wav_data.result()
