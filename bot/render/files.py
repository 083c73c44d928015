"""The files of one piece and the one place that decides what fits an upload.

`render_piece` turns a piece into its files: the `.mid`, an Ogg Opus listening copy, a `.wav`, the piano
roll and, on request, an `.mp4`, each within the byte limit, with a note for the user on whatever was
reduced. FluidSynth plays the piece once; every audio file is encoded from that one render. It runs in the
render processes of the pool (`bot.render.pool`) for the worker, and in this process for `etude compose`;
either way a long piece is played in parts on every idle core at once (`bot.render.parts`, `render_here`,
`bot.render.pool.render_on`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from bot.errors import EtudeError, RenderError
from bot.music.events import Event
from bot.music.perform import Performance
from bot.options import UPLOAD_LIMIT_BYTES
from bot.render.atomic import temp_path
from bot.render.audio import AudioInfo, encode, opus_kbps, plan_wav, trim
from bot.render.loudness import master
from bot.render.parts import cores as default_cores
from bot.render.parts import mix, play_parts, split_midi
from bot.render.pianoroll import draw_piano_roll
from bot.render.synth import Synth, SynthSettings

log = logging.getLogger(__name__)

MAX_AUDIO_SECONDS = 30 * 60.0  # a render never runs past this, whatever the MIDI file claims
CONTENT_TYPES = {
    "mid": "audio/midi",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "png": "image/png",
    "mp4": "video/mp4",
}


class Piece(Protocol):
    """What rendering needs of a composed piece (`bot.model.composer.Composition` is one)."""

    name: str
    events: Sequence[Event]
    seed_events: int
    tempo: float
    key: str
    model: str
    timings: dict[str, float]
    performance: Performance

    def midi(self) -> bytes: ...


@dataclass(frozen=True)
class RenderRequest:
    """Everything a render process needs, and nothing it would have to import a model for."""

    name: str
    midi: bytes
    events: tuple[Event, ...]
    seed_events: int
    tempo: float
    title: str
    max_bytes: int
    video: bool = False
    melody: tuple[Event, ...] = ()  # a harmonization's given line, drawn in its own colour
    tempos: tuple[tuple[float, float], ...] = ()  # the performance's tempo map: (beat, bpm)
    note: str = ""  # what the performance changed of the seed, for the user

    @classmethod
    def of(cls, piece: Piece, max_bytes: int, video: bool = False) -> RenderRequest:
        title = f"{piece.name} · {piece.key} · {piece.tempo:.0f} bpm · {piece.model}"
        performance = piece.performance
        return cls(
            piece.name,
            piece.midi(),
            tuple(piece.events),
            piece.seed_events,
            piece.tempo,
            title,
            max_bytes,
            video,
            tuple(getattr(piece, "melody", ())),
            tuple(performance.tempos),
            performance.note,
        )


@dataclass(frozen=True)
class RenderedFile:
    name: str
    data: bytes
    content_type: str


@dataclass
class Rendered:
    """The files of a piece in the order a reply shows them, and what the user should know about them."""

    files: list[RenderedFile]
    note: str = ""
    ogg: AudioInfo | None = None
    wav: AudioInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)
    parts: int = 1  # synths that played the piece at once

    def file(self, suffix: str) -> RenderedFile | None:
        return next((f for f in self.files if f.name.endswith("." + suffix)), None)


def _file(name: str, suffix: str, data: bytes) -> RenderedFile:
    return RenderedFile(f"{name}.{suffix}", data, CONTENT_TYPES[suffix])


def _png(request: RenderRequest) -> bytes:
    with tempfile.TemporaryDirectory(prefix="etude-png-") as tmp:
        path = draw_piano_roll(
            request.events,
            Path(tmp) / "roll.png",
            seed_events=request.seed_events,
            melody=request.melody,
            tempo=request.tempo,
            title=request.title,
        )
        return path.read_bytes()


def render_piece(
    request: RenderRequest, synth: Synth, audio: np.ndarray | None = None, parts: int = 1
) -> Rendered:
    """All the files of `request`, each within `request.max_bytes`; the note says what was reduced.

    `synth` plays the piece, unless `audio` holds it played already, by `parts` synths at once.
    """
    from bot.render.video import encode_video, mux, roll_strip, video_kbps

    limit = request.max_bytes
    timings: dict[str, float] = {}
    notes: list[str] = []
    rate = synth.settings.sample_rate
    plan_wav(1.0, limit)  # a limit too small for any audio is refused before FluidSynth runs
    with ThreadPoolExecutor(2) as side:
        # The picture does not need the audio: it is drawn while FluidSynth plays.
        png = side.submit(_png, request)
        t = time.perf_counter()
        if audio is None:
            audio = synth.render(request.midi, MAX_AUDIO_SECONDS, reuse=True)
        audio = master(trim(audio, rate), rate)  # EBU R128 loudness, peaks under the ceiling
        timings["synth"] = time.perf_counter() - t
        seconds = len(audio) / rate
        wav_plan = plan_wav(seconds, limit)
        kbps = opus_kbps(seconds, limit)
        video = None
        if request.video:
            # The picture moves while the audio is encoded; the sound is the .ogg's, added afterwards.
            v_kbps = video_kbps(seconds, limit, int(seconds * (kbps or 0) * 1000 / 8 * 1.15))
            if kbps is None or v_kbps is None:
                notes.append("The video is left out: it cannot fit the upload limit and still be watched.")
            else:
                strip = roll_strip(
                    request.events, request.tempo, seconds, request.seed_events, request.tempos
                )
                video = side.submit(encode_video, strip, seconds, v_kbps)
        t = time.perf_counter()
        ogg_data, wav_data = encode(audio, rate, wav_plan, kbps)
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        png_data = png.result()
        video_data = None
        if video is not None and ogg_data is not None:
            try:
                video_data = mux(video.result(), ogg_data)
            except EtudeError as e:
                log.warning("video of %s failed: %s", request.name, e)
                notes.append("The video could not be made this time.")
        timings["wait_png_video"] = time.perf_counter() - t

    ogg = AudioInfo.of(ogg_data) if ogg_data is not None else None
    wav = AudioInfo.of(wav_data, wav_plan.shortened)
    if ogg is None:
        notes.insert(0, "The .ogg is left out: the piece is too long for the upload limit even compressed.")
    if wav.shortened:
        whole = "the .ogg and the .mid have" if ogg is not None else "the .mid has"
        notes.insert(
            0,
            f"The .wav holds the first {wav.seconds:.0f} s to fit the upload limit; {whole} the whole piece.",
        )
    elif (wav.sample_rate, wav.channels) != (44100, 2):
        full = " The .ogg is full quality (48 kHz stereo)." if ogg is not None else ""
        notes.insert(0, f"The .wav is {wav.describe()} to fit the upload limit.{full}")
    files = [_file(request.name, "mid", request.midi)]
    if ogg_data is not None:
        files.append(_file(request.name, "ogg", ogg_data))
    files += [_file(request.name, "wav", wav_data), _file(request.name, "png", png_data)]
    if video_data is not None:
        files.append(_file(request.name, "mp4", video_data))
    too_big = [f.name for f in files if len(f.data) > limit]
    if too_big:  # only a limit far below Discord's could do this; the .mid alone still goes out
        files = [f for f in files if len(f.data) <= limit]
        notes.append(f"Left out to fit the upload limit: {', '.join(too_big)}.")
    if request.note:
        notes.insert(0, request.note)
    return Rendered(files, " ".join(notes), ogg, wav, timings, parts)


def midi_only(request: RenderRequest, reason: str) -> Rendered:
    """What a user gets when rendering failed: the `.mid`, which needs none, and one line saying why."""
    note = f"No audio this time ({reason}); the .mid is here."
    return Rendered([_file(request.name, "mid", request.midi)], f"{request.note} {note}".strip())


@cache
def local_synth(soundfont: Path, settings: SynthSettings = SynthSettings(), index: int = 0) -> Synth:
    """A synth in this process, loaded once: for `etude compose` and tests, where no pool runs. `index`
    tells apart the synths that play one piece's parts at once."""
    return Synth(soundfont, settings)


# -- one piece on several cores (`bot.render.parts`) --------------------------------------------------


@dataclass(frozen=True)
class PartRequest:
    """One part of a piece for a render process to play into `path` as float32 stereo frames."""

    name: str  # the piece's
    midi: bytes
    path: str


@dataclass(frozen=True)
class MixRequest:
    """A piece whose parts are played already: (offset in frames, path) each; mix them, make the files."""

    request: RenderRequest
    parts: tuple[tuple[int, str], ...]

    @property
    def name(self) -> str:
        return self.request.name


def serve_request(request: RenderRequest | PartRequest | MixRequest, synth: Synth) -> object:
    """What a render process of the pool does with each request it is sent."""
    if isinstance(request, PartRequest):
        audio = synth.render(request.midi, MAX_AUDIO_SECONDS, reuse=True)
        np.ascontiguousarray(audio, np.float32).tofile(request.path)
        return len(audio)
    if isinstance(request, MixRequest):
        parts = [(offset, np.fromfile(path, np.float32).reshape(-1, 2)) for offset, path in request.parts]
        return render_piece(request.request, synth, mix(parts, into=synth.scratch), len(parts))
    return render_piece(request, synth)


def render_here(
    request: RenderRequest, soundfont: str | Path | None = None, cores: int | None = None
) -> Rendered:
    """`request` rendered in this process, in parts on one synth per core when the piece is long enough."""
    from bot.render.audio import find_soundfont

    font = find_soundfont(soundfont)
    synths = [local_synth(font, index=i) for i in range(cores or default_cores())]
    parts = split_midi(request.midi, len(synths), synths[0].settings.sample_rate)
    if len(parts) <= 1:
        return render_piece(request, synths[0])
    # Every buffer is the synths' own, reused from piece to piece (`Synth.render`).
    players = [lambda midi, s=s: s.render(midi, MAX_AUDIO_SECONDS, reuse=True) for s in synths]
    t = time.perf_counter()
    audio = play_parts(parts, players, into=synths[0].scratch)
    played = time.perf_counter() - t
    rendered = render_piece(request, synths[0], audio, len(parts))
    rendered.timings["synth"] += played
    return rendered


@dataclass
class Outputs:
    """The files `write_outputs` wrote, by suffix ("mid", "ogg", "wav", "png", "mp4"), and what the render
    said about them."""

    paths: dict[str, Path]
    rendered: Rendered

    @property
    def midi(self) -> Path:
        return self.paths["mid"]

    @property
    def wav(self) -> Path:
        return self.paths["wav"]

    @property
    def png(self) -> Path:
        return self.paths["png"]


def write_outputs(
    piece: Piece,
    out_dir: Path,
    max_bytes: int = UPLOAD_LIMIT_BYTES,
    soundfont: str | Path | None = None,
    *,
    video: bool = False,
) -> Outputs:
    """Write the piece's files to `out_dir` (renamed into place); render timings go into `piece.timings`."""
    from bot.render.audio import find_soundfont

    font = find_soundfont(soundfont)  # before any work: a missing soundfont is the user's to fix
    t = time.perf_counter()
    rendered = render_here(RenderRequest.of(piece, max_bytes, video), font)
    piece.timings["render"] = time.perf_counter() - t
    piece.timings.update(rendered.timings)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for f in rendered.files:
        path = out_dir / f.name
        with temp_path(out_dir, f.name, ".part") as tmp:
            tmp.write_bytes(f.data)
            tmp.replace(path)
        paths[f.name.rsplit(".", 1)[1]] = path
    return Outputs(paths, rendered)


__all__ = [
    "Outputs",
    "Piece",
    "RenderError",
    "RenderRequest",
    "Rendered",
    "RenderedFile",
    "MixRequest",
    "PartRequest",
    "local_synth",
    "midi_only",
    "render_here",
    "render_piece",
    "serve_request",
    "write_outputs",
]
