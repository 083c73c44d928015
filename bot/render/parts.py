"""One piece played by several synths at once: cut by time, each part played apart, the parts added up.

FluidSynth's output is a sum over its voices and its reverb is linear, so playing a piece's notes in
groups and adding the results gives the piece as one synth plays it: each note is played once, by the
part in which it starts, through to its release and reverb. The parts differ from one whole render only
where the reverb's slow modulation starts again at each part. With N cores idle, one piece renders in
about 1/N of the time; under load the pool gives each piece one process and nothing is split.

Each part's MIDI file holds the notes that start in its stretch of time, every controller and program
change up to its last release or the pedal lift after it (those before its start are replayed at its
start), and runs on a clock of its own: times in seconds, so the tempo map needs no rewriting. Its start is a whole number of
FluidSynth's 64-frame blocks and of milliseconds, the two clocks the player quantizes events to, so a
note lands on the same frame as in a whole render.
"""

from __future__ import annotations

import io
import math
import os
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import mido
import numpy as np

MIN_PART_SECONDS = 15.0  # shorter parts cost more in start-up and tails than they save
# What a note costs FluidSynth, in seconds of the piece played: on the bench's pedalled 500-note piece a
# synth spent 3.1 ms per second played (the reverb runs throughout) and 0.5 ms more per note. Parts of equal
# time were 671 and 1,044 notes, 0.74 and 0.93 s; cut at equal cost they take the same time.
ONSET_SECONDS = 0.16
_BLOCK = 64  # FluidSynth's processing block in frames (FLUID_BUFSIZE)
# A part file's clock: 24,000 ticks a beat at 250,000 us a beat, so one tick is 1/96,000 s and every
# whole millisecond and whole 48 kHz or 96 kHz frame is a whole number of ticks.
_TICKS_PER_BEAT = 24_000
_US_PER_BEAT = 250_000
_TICKS_PER_SECOND = _TICKS_PER_BEAT * 1_000_000 // _US_PER_BEAT


@dataclass(frozen=True)
class Part:
    """One part of a piece: a MIDI file whose time 0 is `offset` frames into the piece."""

    offset: int
    midi: bytes


def cores() -> int:
    """The cores this process may use: one render process, or one part of a piece, each."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _step(rate: int) -> int:
    """The frames between possible cuts: whole blocks and whole milliseconds at `rate`."""
    per_ms = rate // math.gcd(rate, 1000)  # frames in the shortest whole number of milliseconds
    return _BLOCK * per_ms // math.gcd(_BLOCK, per_ms)


def _timeline(midi: bytes) -> list[tuple[float, mido.Message]]:
    """Every channel message of `midi` with its time in seconds from the start, in playing order."""
    now, out = 0.0, []
    for msg in mido.MidiFile(file=io.BytesIO(midi)):  # tracks merged, tempo map applied
        now += msg.time
        if not msg.is_meta and msg.type != "sysex":
            out.append((now, msg))
    return out


def _is_on(msg: mido.Message) -> bool:
    return msg.type == "note_on" and msg.velocity > 0


def _is_off(msg: mido.Message) -> bool:
    return msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)


def _is_lift(msg: mido.Message) -> bool:
    return msg.type == "control_change" and msg.control == 64 and msg.value < 64


def _write(messages: Sequence[tuple[float, mido.Message]]) -> bytes:
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=_US_PER_BEAT, time=0)])
    now = 0
    for seconds, msg in messages:
        tick = max(now, round(seconds * _TICKS_PER_SECOND))
        track.append(msg.copy(time=tick - now))
        now = tick
    buf = io.BytesIO()
    mido.MidiFile(type=0, ticks_per_beat=_TICKS_PER_BEAT, tracks=[track]).save(file=buf)
    return buf.getvalue()


def _equal_cost(onsets: Sequence[float], count: int) -> list[float]:
    """`count` start times (the first 0) that share the cost of playing up to the last onset equally: the
    time played plus `ONSET_SECONDS` for each note started, measured every 10 ms."""
    at = np.sort(np.asarray(onsets))
    grid = np.arange(0.0, at[-1], 0.01)
    cost = grid + ONSET_SECONDS * np.searchsorted(at, grid)  # rises with the time and at each onset
    total = at[-1] + ONSET_SECONDS * len(at)
    return [0.0] + [
        float(grid[min(np.searchsorted(cost, total * k / count), len(grid) - 1)]) for k in range(1, count)
    ]


def split_midi(midi: bytes, most: int, rate: int, min_seconds: float = MIN_PART_SECONDS) -> list[Part]:
    """`midi` cut into at most `most` parts of at least `min_seconds` each on average, of about equal cost
    to play: a dense stretch is a shorter part (`ONSET_SECONDS`).

    One part (the file itself, at offset 0) when the piece is too short to be worth cutting.
    """
    timeline = _timeline(midi)
    onsets = [t for t, msg in timeline if _is_on(msg)]
    if not onsets:
        return [Part(0, midi)]
    end = onsets[-1]
    count = max(1, min(most, int(end // min_seconds)))
    if count == 1:
        return [Part(0, midi)]
    step = _step(rate)
    cuts = [round(t * rate / step) * step for t in _equal_cost(onsets, count)]  # frames, cuts[0] == 0
    starts = [c / rate for c in cuts]

    def part_of(seconds: float) -> int:
        k = count - 1
        while k > 0 and seconds < starts[k]:
            k -= 1
        return k

    # Each note goes to the part it starts in; its release follows it there.
    notes: list[list[tuple[float, mido.Message]]] = [[] for _ in range(count)]
    sounding: dict[tuple[int, int], deque[int]] = defaultdict(deque)
    for t, msg in timeline:
        if _is_on(msg):
            k = part_of(t)
            sounding[(msg.channel, msg.note)].append(k)
            notes[k].append((t, msg))
        elif _is_off(msg):
            queue = sounding.get((msg.channel, msg.note))
            if queue:  # a release with no note to end is dropped
                notes[queue.popleft()].append((t, msg))
    parts = []
    for k in range(count):
        if not notes[k]:
            continue
        begin, last = starts[k], notes[k][-1][0]
        # Notes held by the sustain pedal sound until it lifts: the part keeps the first lift after its
        # last release, or they would ring on into its tail instead of being damped with the rest.
        last = next((t for t, msg in timeline if t >= last and _is_lift(msg)), last)
        # Controllers and programs: those before the part's start set up its synth at time 0.
        setup = [(0.0, msg) for t, msg in timeline if t < begin and not (_is_on(msg) or _is_off(msg))]
        during = [
            (t - begin, msg)
            for t, msg in timeline
            if begin <= t <= last and not (_is_on(msg) or _is_off(msg))
        ]
        own = [(t - begin, msg) for t, msg in notes[k]]
        # Controllers before notes at the same time, as in the file: a program change precedes its notes.
        merged = sorted(setup + during + own, key=lambda item: item[0])
        parts.append(Part(cuts[k], _write(merged)))
    return parts


def mix(
    parts: Sequence[tuple[int, np.ndarray]], into: Callable[[int], np.ndarray] | None = None
) -> np.ndarray:
    """Rendered parts (offset in frames, float frames × channels; at least one) added into one piece, in
    the buffer `into(frames)` gives (float32 stereo, overwritten) or a new one."""
    frames = max(offset + len(audio) for offset, audio in parts)
    if into is None:
        out = np.zeros((frames, parts[0][1].shape[1]), np.float32)
    else:
        out = into(frames)
        out[:] = 0.0
    for offset, audio in parts:
        out[offset : offset + len(audio)] += audio
    return out


def play_parts(
    parts: Sequence[Part],
    players: Sequence[Callable[[bytes], np.ndarray]],
    into: Callable[[int], np.ndarray] | None = None,
) -> np.ndarray:
    """Each part played by its own player at once (threads: the synth runs outside the GIL), then mixed
    (in `into`'s buffer, as `mix` does)."""
    with ThreadPoolExecutor(len(parts), thread_name_prefix="etude-part") as threads:
        audio = list(threads.map(lambda i: players[i](parts[i].midi), range(len(parts))))
    return mix([(p.offset, a) for p, a in zip(parts, audio)], into)
