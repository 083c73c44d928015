"""Standard MIDI Files out: a piece's events written as a type-1 file, with mido.

The reader of untrusted files, with its limits, is `bot.music.midi`; the tempo range that both clamp to is
in `bot.music.midi_tempo`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import mido

from bot.music.events import Event, fold_pitch
from bot.music.meter import Meter
from bot.music.midi_tempo import TEMPO_HIGH, TEMPO_LOW

TICKS_PER_BEAT = 480  # what write_midi uses


def _clamp_tempo(bpm: float) -> float:
    if not math.isfinite(bpm):
        return 100.0
    return min(max(bpm, TEMPO_LOW), TEMPO_HIGH)


def _note_track(
    starts: dict[tuple[int, int], tuple[int, int]],
    controls: Sequence[tuple[int, int, int]],
    program: int,
    name: str,
) -> mido.MidiTrack:
    """Channel 0's track: the program, then notes ((on, pitch) -> (off, velocity), in ticks) and
    controllers ((tick, number, value)) in time order."""
    notes = sorted((on, off, pitch, vel) for (on, pitch), (off, vel) in starts.items())
    # A pitch sounding again before it was released: end the earlier note there, so none is left stuck.
    last: dict[int, int] = {}
    for i, (on, _off, pitch, _vel) in enumerate(notes):
        if pitch in last:
            j = last[pitch]
            notes[j] = (notes[j][0], min(notes[j][1], on), pitch, notes[j][3])
        last[pitch] = i
    # At one tick: releases, then controllers (a pedal lifted before the new chord), then attacks, so a
    # repeated pitch is re-struck, not cut, and the old harmony is damped before the new one sounds.
    timeline = sorted(
        [(off, 0, pitch, vel) for _, off, pitch, vel in notes]
        + [(tick, 1, number, value) for tick, number, value in controls]
        + [(on, 2, pitch, vel) for on, _, pitch, vel in notes]
    )
    body = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    body.append(mido.Message("program_change", channel=0, program=min(max(int(program), 0), 127), time=0))
    now = 0
    for tick, kind, a, b in timeline:
        if kind == 1:
            msg = mido.Message("control_change", channel=0, control=a, value=b, time=tick - now)
        else:
            msg = mido.Message(
                "note_on" if kind else "note_off", channel=0, note=a, velocity=b, time=tick - now
            )
        body.append(msg)
        now = tick
    return body


def write_midi(
    events: Sequence[Event],
    out: Path | BinaryIO,
    tempo: float = 100.0,
    program: int = 0,
    name: str = "Étude",
    meter: Meter | None = None,
) -> None:
    """Write `events` as a type-1 MIDI file: a tempo track with the time signature (4/4 from the start
    unless `meter` says otherwise), then one note track on channel 0."""
    tempo = _clamp_tempo(float(tempo))
    # mido writes names as Latin-1; characters it cannot hold become "?" rather than an error.
    name = name.encode("latin-1", "replace").decode("latin-1")
    head = mido.MidiTrack(
        [
            mido.MetaMessage("track_name", name=name, time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0),
        ]
    )
    now = 0
    for tick, numerator, denominator in time_signatures(meter or Meter()):
        head.append(
            mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator, time=tick - now)
        )
        now = tick

    # (on, off, pitch, velocity) in ticks; the longest wins when one pitch starts twice at one tick.
    starts: dict[tuple[int, int], tuple[int, int]] = {}
    for e in events:
        on = max(0, round(e.onset * TICKS_PER_BEAT))
        off = max(on + 1, round((e.onset + e.duration) * TICKS_PER_BEAT))
        vel = min(max(int(e.velocity), 1), 127)
        for p in e.pitches:
            key = (on, fold_pitch(int(p), 0, 127))
            if key not in starts or starts[key][0] < off:
                starts[key] = (off, vel)
    body = _note_track(starts, [], program, name)
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, tracks=[head, body])
    if isinstance(out, (str, Path)):
        midi.save(filename=str(out))
    else:
        midi.save(file=out)


def midi_bytes(
    events: Sequence[Event],
    tempo: float = 100.0,
    program: int = 0,
    name: str = "Étude",
    meter: Meter | None = None,
) -> bytes:
    """`write_midi` in memory."""
    buf = io.BytesIO()
    write_midi(events, buf, tempo, program, name, meter)
    return buf.getvalue()


def time_signatures(meter: Meter) -> list[tuple[int, int, int]]:
    """(tick, numerator, denominator) that put the file's bars where `meter` has them: when the first
    downbeat is not at the start, a short first bar (a pickup) in sixteenths, as notation programs write it."""
    pickup = round(meter.downbeat % meter.bar, 6) % meter.bar
    if pickup == 0 or abs(pickup * 4 - round(pickup * 4)) > 1e-6:
        return [(0, meter.numerator, meter.denominator)]
    numerator, denominator = round(pickup * 4), 16
    while numerator % 2 == 0 and denominator > 4:
        numerator, denominator = numerator // 2, denominator // 2
    return [(0, numerator, denominator), (round(pickup * TICKS_PER_BEAT), meter.numerator, meter.denominator)]


def performance_bytes(
    notes: Sequence[tuple[float, float, int, int]],
    tempos: Sequence[tuple[float, float]],
    pedal: Sequence[tuple[float, int]],
    program: int = 0,
    name: str = "Étude",
    meter: Meter | None = None,
) -> bytes:
    """A performance (`bot.music.perform`) as a type-1 file: the tempo map ((beat, bpm), the first at 0) in
    the tempo track, each note ((onset, end) in beats, pitch, velocity) at its own velocity, and the
    sustain pedal ((beat, CC64 value)) beside the notes, so any sequencer plays it as the render does."""
    name = name.encode("latin-1", "replace").decode("latin-1")
    meta = [
        (
            round(beat * TICKS_PER_BEAT),
            0,
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(_clamp_tempo(bpm))),
        )
        for beat, bpm in tempos
    ]
    meta += [
        (tick, 1, mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator))
        for tick, numerator, denominator in time_signatures(meter or Meter())
    ]
    head = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, msg in sorted(meta, key=lambda m: m[:2]):
        head.append(msg.copy(time=max(0, tick - now)))
        now = max(now, tick)
    starts: dict[tuple[int, int], tuple[int, int]] = {}
    for onset, end, pitch, velocity in notes:
        on = max(0, round(onset * TICKS_PER_BEAT))
        off = max(on + 1, round(end * TICKS_PER_BEAT))
        key = (on, fold_pitch(int(pitch), 0, 127))
        if key not in starts or starts[key][0] < off:
            starts[key] = (off, min(max(int(velocity), 1), 127))
    controls = [(max(0, round(beat * TICKS_PER_BEAT)), 64, value) for beat, value in pedal]
    body = _note_track(starts, controls, program, name)
    buf = io.BytesIO()
    mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, tracks=[head, body]).save(file=buf)
    return buf.getvalue()
