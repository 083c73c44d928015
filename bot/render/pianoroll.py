"""Events to a piano-roll picture: beats across, pitch up, the seed (or a given melody) in its own colour."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.music.events import Event
from bot.render.atomic import temp_path

SEED_COLOUR = "#d9822b"
COMPOSED_COLOUR = "#2b5fa8"
MELODY_COLOUR = "#c0392b"
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
    melody: Sequence[Event] = (),
    tempo: float = 100.0,
    title: str = "",
    width_px: int = 1600,
    height_px: int = 600,
) -> Path:
    """Draw `events` as a piano roll (beats across, pitch up) to a PNG; the first `seed_events` stand out.

    Notes of `events` that are also notes of `melody` (same onset and pitch) are drawn in the melody's
    colour: a harmonization shows the line it was given apart from the voices written under it.
    """
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

    given = {(round(e.onset * 48), p) for e in melody for p in e.pitches}
    notes = [
        (e.onset, e.duration, p, e.velocity, i < seed_events, (round(e.onset * 48), p) in given)
        for i, e in enumerate(events)
        for p in e.pitches
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
        onset, duration, pitch, velocity, is_seed, is_melody = (
            np.array(col) for col in zip(*notes, strict=True)
        )
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
        base = np.where(is_melody[:, None], np.array(to_rgba(MELODY_COLOUR)), base)
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
        handles = []
        if seed_events > 0:
            handles = [Patch(color=SEED_COLOUR, label="seed")]
            if seed_events < len(events):
                handles.append(Patch(color=COMPOSED_COLOUR, label="composed"))
        elif is_melody.any():
            handles = [
                Patch(color=MELODY_COLOUR, label="melody"),
                Patch(color=COMPOSED_COLOUR, label="harmony"),
            ]
        if handles:
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
    with temp_path(png_path.parent, png_path.name, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
        os.replace(tmp, png_path)
    return png_path
