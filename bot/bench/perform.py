"""`etude bench --sections perform`: the same pieces rendered `plain` and `expressive`, and what a listener
would measure of each: EBU R128 loudness range, integrated loudness and true peak of the `.ogg` (ffmpeg's
ebur128 filter), the spread of velocities, how far the melody stands above the inner voices, the tempo
change into the final cadence and the widest chord (its notes' onsets apart, in milliseconds)."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, replace

import mido
import numpy as np

from bot.options import Options

# Each line of ebur128's summary that the bench reports: (label in the summary, name).
_SUMMARY = (("I:", "I"), ("LRA:", "LRA"), ("Peak:", "TP"))


def _say(text: str = "") -> None:
    print(text, flush=True)


def ebur128(audio: bytes, suffix: str = "ogg") -> dict[str, float]:
    """Integrated loudness (LUFS), loudness range (LU) and true peak (dBFS) of an audio file, by ffmpeg."""
    import subprocess
    import tempfile
    from pathlib import Path

    from bot.render.audio import ffmpeg_path

    with tempfile.TemporaryDirectory(prefix="etude-r128-") as tmp:
        path = Path(tmp) / f"a.{suffix}"
        path.write_bytes(audio)
        proc = subprocess.run(
            [ffmpeg_path(), "-nostdin", "-hide_banner", "-nostats", "-i", str(path)]
            + ["-af", "ebur128=peak=true", "-f", "null", "-"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    summary = proc.stderr[proc.stderr.rfind("Summary:") :]
    out = {}
    for label, name in _SUMMARY:
        found = re.search(rf"{re.escape(label)}\s+(-?[\d.]+|-inf)", summary)
        out[name] = float(found.group(1)) if found else float("nan")
    return out


@dataclass
class Measures:
    """What the bench reports of one piece played one way."""

    lufs: float
    lra: float
    true_peak: float
    spread: float  # 10th to 90th percentile of the velocities
    lead: float  # mean velocity of the top voice minus that of the inner voices
    final_tempo: float  # tempo at the final chord against the tempo before the last two bars, in %
    chord_ms: float  # the widest spread of onsets among notes written to start together
    render_cpu: float  # this process and its ffmpeg runs


def chord_spread_ms(midi: bytes) -> float:
    """The widest gap, in ms with the tempo map applied, between onsets of notes on one grid step."""
    from bot.music.events import GRID

    file = mido.MidiFile(file=io.BytesIO(midi))
    seconds = tick = 0.0
    by_step: dict[int, list[float]] = {}
    # Iterating the file gives each message's seconds; merging its tracks gives the same messages' ticks.
    for timed, ticked in zip(file, mido.merge_tracks(file.tracks)):
        seconds += timed.time
        tick += ticked.time
        if timed.type == "note_on" and timed.velocity > 0:
            by_step.setdefault(round(tick * GRID / file.ticks_per_beat), []).append(seconds)
    return 1000 * max((max(s) - min(s) for s in by_step.values()), default=0.0)


def measure(piece, style: str, cores: int) -> Measures:
    from bot.bench.render import _cpu
    from bot.render.files import RenderRequest, render_here

    piece = replace(piece, options=replace(piece.options, performance=style))
    performance = piece.performance
    velocities = np.array([n.velocity for n in performance.notes])
    roles = np.array([n.role for n in performance.notes])
    inner = velocities[roles == "inner"]
    lead = float(velocities[roles == "top"].mean() - inner.mean()) if len(inner) else 0.0
    p10, p90 = np.percentile(velocities, [10, 90])
    last = max(n.onset for n in performance.notes)
    before = [bpm for beat, bpm in performance.tempos if beat <= last - 8] or [performance.tempos[0][1]]
    at_end = [bpm for beat, bpm in performance.tempos if beat <= last][-1]
    t = _cpu()
    rendered = render_here(RenderRequest.of(piece, 50 * 1024 * 1024), cores=cores)
    cpu = _cpu() - t
    loud = ebur128(rendered.file("ogg").data)
    return Measures(
        loud["I"],
        loud["LRA"],
        loud["TP"],
        float(p90 - p10),
        lead,
        100 * (at_end / before[-1] - 1),
        chord_spread_ms(piece.midi()),
        cpu,
    )


def bench_perform(composer, length: int, pieces: int = 3) -> None:
    """Each of `pieces` fixed pieces (RNG seeds 100, 101, ...) rendered both ways, on one core."""
    _say(
        f"  {'piece':10s} {'way':10s} {'LUFS':>6s} {'LRA LU':>7s} {'TP dBFS':>8s} {'vel p10-90':>10s} "
        f"{'lead':>5s} {'final tempo':>11s} {'chord ms':>8s} {'render CPU s':>12s}"
    )
    for i in range(pieces):
        piece = composer.compose_one(Options(length=length, rng_seed=100 + i))
        for style in ("plain", "expressive"):
            m = measure(piece, style, cores=1)
            _say(
                f"  {piece.name:10s} {style:10s} {m.lufs:6.1f} {m.lra:7.1f} {m.true_peak:8.1f} {m.spread:10.0f} "
                f"{m.lead:5.1f} {m.final_tempo:10.0f}% {m.chord_ms:8.1f} {m.render_cpu:12.2f}"
            )
