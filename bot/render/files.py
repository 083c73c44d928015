"""The files of one piece: `.mid`, audio and piano roll, written to a folder."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.music.encoding import Event
from bot.render.audio import AudioInfo, find_soundfont, render_wav
from bot.render.pianoroll import draw_piano_roll


class Piece(Protocol):
    """What rendering needs of a composed piece (`bot.model.composer.Composition` is one)."""

    name: str
    events: Sequence[Event]
    seed_events: int
    tempo: float
    key: str
    model: str
    timings: dict[str, float]

    def midi(self) -> bytes: ...


@dataclass
class Outputs:
    midi: Path
    wav: Path
    png: Path
    audio: AudioInfo


def write_outputs(
    piece: Piece, out_dir: Path, max_bytes: int = 10 * 1024 * 1024, soundfont: str | None = None
) -> Outputs:
    """Write `<name>.mid`, `.wav` (fitted to `max_bytes`) and `.png`; stage timings go into `piece.timings`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sf = find_soundfont(soundfont)  # before any work: a missing soundfont is the user's to fix
    t = time.perf_counter()
    midi_path = out_dir / f"{piece.name}.mid"
    midi_path.write_bytes(piece.midi())
    piece.timings["write_midi"] = time.perf_counter() - t
    t = time.perf_counter()
    audio = render_wav(midi_path, out_dir / f"{piece.name}.wav", max_bytes, soundfont=sf)
    piece.timings["render_wav"] = time.perf_counter() - t
    t = time.perf_counter()
    title = f"{piece.name} · {piece.key} · {piece.tempo:.0f} bpm · {piece.model}"
    png = draw_piano_roll(
        piece.events,
        out_dir / f"{piece.name}.png",
        seed_events=piece.seed_events,
        melody=getattr(piece, "melody", ()),  # a harmonization's given line, drawn in its own colour
        tempo=piece.tempo,
        title=title,
    )
    piece.timings["draw_png"] = time.perf_counter() - t
    return Outputs(midi_path, audio.path, png, audio)
