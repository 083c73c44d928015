"""The performer: how a piece's notes are played, apart from which notes they are.

The network writes notes (`bot.music.events`); this module decides how loud each one is, how the tempo
bends at phrase ends and into the final cadence, and when the sustain pedal goes down. `bot.music.midi_out`
writes the result, so the `.mid` plays the same in any sequencer as in the render. `plain` is the piece as
the notes say: every velocity as written (80 for the model's own notes), one tempo, no pedal.

The shaping follows rules measured from pianists' playing (Friberg, Bresin and Sundberg, "Overview of the
KTH rule system for musical performance", 2006): a phrase arch (louder toward the middle of a phrase,
softer and slower at its end), high-loud (a phrase that climbs is played louder), metric accents, melody
lead (the top voice above the rest, the bass supported), and the final ritardando of Friberg and Sundberg
(1999): tempo v(x) = (1 + (w^q - 1) x)^(1/q) over the last bars, x from 0 to 1. Nothing is random: notes
that start together start on one tick, so no chord is blurred.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.music.events import GRID, Event, Piece
from bot.music.meter import Meter
from bot.music.midi_out import midi_bytes, performance_bytes

# Pianos (acoustic, electric, honky-tonk: 0-5) and the chromatic percussion whose real instruments have a
# damper pedal: celesta (8), vibraphone (11) and tubular bells (14). Harpsichord (6) and clavinet (7) have
# none; glockenspiel, music box, marimba, xylophone and dulcimer are let ring or damped by hand; organ,
# strings, winds and voices sustain by themselves, and a pedal would only smear them.
PEDAL_PROGRAMS = frozenset({0, 1, 2, 3, 4, 5, 8, 11, 14})

DEFAULT_LEVEL = 72.0  # mezzo-forte on the FluidR3 piano, where the model's flat 80 sits a little loud
LEVEL_RANGE = (40.0, 96.0)  # a seed's level is taken within this: pianissimo to forte
LOW, HIGH = 16, 118  # no note so soft it vanishes in the reverb, none at the synth's hard-hammer top
# Velocity steps. The piece rises to a climax about 60% of the way through and falls back (PIECE_ARC from
# its softest to its loudest point); each phrase swells and fades the same way (PHRASE_ARCH); a phrase
# whose melody lies higher than the piece's is louder (HIGH_LOUD per semitone, at most HIGH_LOUD_MAX).
PIECE_ARC = 22.0
PHRASE_ARCH = 18.0
HIGH_LOUD, HIGH_LOUD_MAX = 0.8, 8.0
DOWNBEAT, MIDBAR = 6.0, 3.0  # a bar's first beat, and the middle of a bar of 2 or 4 beats; other beats 0
OFFBEAT = -3.0
VOICE = {"top": 6.0, "bass": 1.0, "inner": -6.0}  # melody lead: 12 steps over the inner voices
DEFAULT_SPREAD = 34.0  # about the 10th-90th percentile velocity range these rules give (27-33 on the
# bench's pieces); a seed's own range scales every shaping rule above by its ratio to this, within 0.5-1.5
ARCH_PEAK = 0.6  # where in a phrase (and in the piece) the arch peaks
PHRASE_BEATS = 16.0  # without fermatas, a phrase is four 4/4 bars
# Timing, as factors of the written tempo.
PHRASE_END = 0.9  # the beat before a phrase's final chord
FERMATA = 0.55  # a fermata held almost twice its written length
FINAL_BEATS = 8.0  # the final ritardando spans the last two bars before the final chord
FINAL_TEMPO, FINAL_Q = 0.6, 2.0  # w and q of the final-ritard model
RING_BEATS = 3.0  # the last chord is held at least this long (at the final tempo), then let ring
PEDAL_LIFT = 0.125  # beats after a harmony change until the pedal goes down again (legato pedalling)
PEDAL_RING = 1.0  # beats the pedal stays down after the last chord is released


@dataclass(frozen=True)
class SeedStyle:
    """How a seed was played, as far as the performer uses it: its level, range and pedal, in beats."""

    level: float | None = None  # median velocity; None when the velocities say nothing (flat at 127, mute)
    spread: float | None = None  # 10th-90th percentile range; None for a flat seed
    pedal: tuple[tuple[float, int], ...] = ()  # the seed's own CC64 changes; () when absent or unusable
    velocities_fixed: str = ""  # why the seed's own velocities are not used, for the user
    pedal_fixed: str = ""  # why the seed's own pedal is not used, for the user


def seed_style(piece: Piece) -> SeedStyle:
    """What the performer takes from a seed; a mute, maxed-out or pedal-stuck seed is named, not copied."""
    vel = np.array([e.velocity for e in piece.events], dtype=float)
    level = spread = None
    fixed = ""
    if piece.meta.get("velocities_zero"):
        fixed = "The seed's notes had no loudness (velocity 0); they are played at a moderate level."
    elif len(vel) and vel.min() >= 120:
        fixed = "The seed's notes were all at full velocity; they are played at a moderate level."
    elif len(vel) and np.median(vel) < 12:
        fixed = "The seed's notes were almost silent; they are played at a moderate level."
    else:
        level = float(np.clip(np.median(vel), *LEVEL_RANGE))
        p10, p90 = np.percentile(vel, [10, 90])
        spread = float(p90 - p10) if p90 - p10 >= 4 else None
    pedal = tuple(piece.pedal)
    pedal_fixed = ""
    if pedal and _pedal_stuck(pedal, piece.events):
        pedal = ()
        pedal_fixed = (
            "The seed held the sustain pedal down throughout; it is pedalled with the harmony instead."
        )
    return SeedStyle(level, spread, pedal, fixed, pedal_fixed)


def _pedal_stuck(pedal: Sequence[tuple[float, int]], events: Sequence[Event]) -> bool:
    """True when the pedal is down for at least 90% of the seed and never lifted in between."""
    if not events:
        return False
    start, end = events[0].onset, max(e.onset + e.duration for e in events)
    down_at, down, lifts = None, 0.0, 0
    for beat, value in pedal:
        if value >= 64 and down_at is None:
            down_at = beat
        elif value < 64 and down_at is not None:
            lifts += beat < end - 0.5
            down += max(0.0, min(beat, end) - max(down_at, start))
            down_at = None
    if down_at is not None:
        down += max(0.0, end - max(down_at, start))
    return down >= 0.9 * (end - start) and lifts <= 1


@dataclass(frozen=True)
class PlayedNote:
    """One note as played."""

    onset: float  # beats, as written
    end: float
    pitch: int
    velocity: int
    role: str  # "top", "bass" or "inner": where it lies among the notes sounding when it starts


@dataclass
class Performance:
    """A piece as played: its notes with velocities, the tempo map and the pedal, all in written beats."""

    notes: list[PlayedNote]
    tempos: list[tuple[float, float]]  # (beat, quarter notes per minute), the first at beat 0
    pedal: list[tuple[float, int]]  # (beat, CC64 value)
    program: int
    note: str = ""  # what the user should know: a seed's level or pedal that was not used
    style: str = "expressive"
    events: list[Event] = field(default_factory=list)  # as written (expressive: the last chord held)
    meter: Meter | None = None  # the piece's time signature and bars, as the .mid writes them

    def seconds(self, beat: float) -> float:
        """The time of `beat` with the tempo map applied."""
        return float(beat_seconds(self.tempos, np.array([beat]))[0])

    def midi(self, name: str = "Étude") -> bytes:
        if self.style == "plain":  # byte for byte what the piece always wrote
            return midi_bytes(self.events, self.tempos[0][1], self.program, name, self.meter)
        notes = [(n.onset, n.end, n.pitch, n.velocity) for n in self.notes]
        return performance_bytes(notes, self.tempos, self.pedal, self.program, name, self.meter)


def beat_seconds(tempos: Sequence[tuple[float, float]], beats: np.ndarray) -> np.ndarray:
    """Seconds from the start at each of `beats`, under the tempo map `tempos` ((beat, bpm), first at 0)."""
    at = np.array([b for b, _ in tempos], dtype=float)
    per_beat = 60.0 / np.array([bpm for _, bpm in tempos], dtype=float)
    start = np.concatenate([[0.0], np.cumsum(np.diff(at) * per_beat[:-1])])
    i = np.clip(np.searchsorted(at, beats, side="right") - 1, 0, len(at) - 1)
    return start[i] + (beats - at[i]) * per_beat[i]


def _roles(notes: list[tuple[float, float, int]]) -> list[str]:
    """Each note's voice: the top of what sounds when it starts, the bottom (with company), or inside."""
    order = sorted(range(len(notes)), key=lambda i: (notes[i][0], notes[i][2]))
    roles = [""] * len(notes)
    active: list[tuple[float, int]] = []  # (end, pitch) of notes sounding
    i = 0
    while i < len(order):
        t = notes[order[i]][0]
        group = []
        while i < len(order) and notes[order[i]][0] == t:
            group.append(order[i])
            i += 1
        active = [(end, p) for end, p in active if end > t]
        sounding = [p for _, p in active] + [notes[k][2] for k in group]
        top, bottom = max(sounding), min(sounding)
        for k in group:
            p = notes[k][2]
            roles[k] = "top" if p == top else "bass" if p == bottom else "inner"
        active += [(notes[k][1], notes[k][2]) for k in group]
    return roles


def _arch(x: np.ndarray) -> np.ndarray:
    """0 at 0 and 1, 1 at ARCH_PEAK: the swell of a phrase."""
    power = math.log(0.5) / math.log(ARCH_PEAK)
    return np.sin(np.pi * np.clip(x, 0.0, 1.0) ** power)


def _phrases(events: Sequence[Event], start: float, end: float) -> list[tuple[float, float, bool]]:
    """(start, end, ends on a fermata) of each phrase from `start` to `end`: the fermatas' ends cut them, and
    a stretch longer than PHRASE_BEATS * 1.25 without one is cut every PHRASE_BEATS."""
    cuts = sorted({e.onset + e.duration for e in events if e.fermata and start < e.onset + e.duration < end})
    bounds, out = [start, *cuts, end], []
    for a, b in zip(bounds, bounds[1:]):
        marked = b != end or any(e.fermata and e.onset + e.duration == end for e in events)
        if b - a > PHRASE_BEATS * 1.25:
            n = max(1, round((b - a) / PHRASE_BEATS))
            step = (b - a) / n
            out += [(a + k * step, a + (k + 1) * step, False) for k in range(n - 1)]
            a = a + (n - 1) * step
        out.append((a, b, marked))
    return out


def perform(
    events: Sequence[Event],
    tempo: float,
    program: int,
    style: str = "expressive",
    seed_events: int = 0,
    seed: SeedStyle | None = None,
    meter: Meter | None = None,
) -> Performance:
    """The piece `events` (the first `seed_events` of them the seed, played as it was) as performed."""
    events = list(events)
    if style == "plain" or not events:
        flat = [(e.onset, e.onset + e.duration, p) for e in events for p in e.pitches]
        vel = [e.velocity for e in events for _ in e.pitches]
        notes = [PlayedNote(a, b, p, v, r) for (a, b, p), v, r in zip(flat, vel, _roles(flat))]
        return Performance(
            notes, [(0.0, float(tempo))], [], program, style="plain", events=events, meter=meter
        )
    seed = seed or SeedStyle()
    heard_seed = seed_events > 0
    seed_end = max((e.onset + e.duration for e in events[:seed_events]), default=0.0)
    last_on = max(e.onset for e in events)
    # The last chord held and let ring.
    events = [
        Event(e.onset, max(e.duration, RING_BEATS), e.pitches, e.velocity, e.fermata)
        if e.onset == last_on
        else e
        for e in events
    ]
    end = max(e.onset + e.duration for e in events)
    flat = [(e.onset, e.onset + e.duration, p) for e in events for p in e.pitches]
    base = np.array([e.velocity for e in events for _ in e.pitches], dtype=float)
    in_seed = np.array([i < seed_events for i, e in enumerate(events) for _ in e.pitches])
    on = np.array([n[0] for n in flat])
    pitch = np.array([n[2] for n in flat], dtype=float)
    roles = _roles(flat)
    role = np.array(roles)

    depth = float(np.clip((seed.spread or DEFAULT_SPREAD) / DEFAULT_SPREAD, 0.5, 1.5))
    level = seed.level if seed.level is not None else DEFAULT_LEVEL
    shape = np.zeros(len(flat))
    first = float(on.min())
    shape += PIECE_ARC * (_arch((on - first) / max(last_on - first, 1e-9)) - 0.5)
    melody = pitch[role == "top"]
    mean_melody = float(melody.mean()) if len(melody) else float(pitch.mean())
    phrases = _phrases(events, first, end)
    for a, b, _ in phrases:
        inside = (on >= a) & (on < b) if b < end else (on >= a)
        if not inside.any():
            continue
        shape[inside] += PHRASE_ARCH * (_arch((on[inside] - a) / max(b - a, 1e-9)) - 0.5)
        tops = inside & (role == "top")
        height = float(pitch[tops].mean()) if tops.any() else float(pitch[inside].mean())
        shape[inside] += float(np.clip(HIGH_LOUD * (height - mean_melody), -HIGH_LOUD_MAX, HIGH_LOUD_MAX))
    meter = meter or Meter()
    beat = 4 / meter.denominator
    in_bar = np.array([meter.in_bar(float(t)) for t in on])
    on_beat = np.isclose(np.round(in_bar / beat) * beat, in_bar, atol=1e-6)
    beats = round(meter.bar / beat)
    mid = np.isclose(in_bar, meter.bar / 2) & (beats in (2, 4))
    shape += np.where(in_bar < 1e-6, DOWNBEAT, np.where(mid, MIDBAR, np.where(on_beat, 0.0, OFFBEAT)))
    voice = np.array([VOICE[r] for r in roles])
    vel = level + depth * shape + voice
    keep_seed = in_seed & (seed.level is not None)  # the seed sounds as it was played
    vel = np.where(keep_seed, base, np.clip(np.round(vel), LOW, HIGH))
    notes = [PlayedNote(a, b, int(p), int(v), r) for (a, b, p), v, r in zip(flat, vel, roles)]

    tempos = _tempo_map(events, phrases, float(tempo), seed_end, last_on, end)
    pedal: list[tuple[float, int]] = []
    notes_text = []
    if program in PEDAL_PROGRAMS:
        own = [(b, v) for b, v in seed.pedal if b < seed_end] if heard_seed else []
        if own and own[-1][1] >= 64:
            own.append((seed_end, 0))  # the seed's pedal let go where the seed ends
        pedal = own + [(b, v) for b, v in _pedal(flat, end) if not own or b >= seed_end]
        if heard_seed and seed.pedal_fixed:
            notes_text.append(seed.pedal_fixed)
    if heard_seed and seed.velocities_fixed:
        notes_text.insert(0, seed.velocities_fixed)
    return Performance(notes, tempos, pedal, program, " ".join(notes_text), "expressive", events, meter)


def _tempo_map(
    events: Sequence[Event],
    phrases: Sequence[tuple[float, float, bool]],
    tempo: float,
    seed_end: float,
    last_on: float,
    end: float,
) -> list[tuple[float, float]]:
    """(beat, bpm) changes: phrase ends broadened, fermatas held, the final ritardando; the seed as written."""
    steps = int(round(end * GRID)) + 1
    factor = np.ones(steps)
    seed_steps = int(round(seed_end * GRID))
    ends_on = {round(e.onset * GRID): e for e in events}
    for _, b, marked in phrases[:-1]:
        # the chord that ends the phrase: the last onset before its end
        chord_on = max((s for s in ends_on if s < round(b * GRID)), default=None)
        if chord_on is None or chord_on < seed_steps:
            continue
        factor[max(chord_on - GRID, seed_steps) : chord_on] *= PHRASE_END
        if marked:
            factor[chord_on : int(round(b * GRID))] *= FERMATA
    # Final ritardando, in half-beat steps, from FINAL_BEATS before the last onset.
    last = int(round(last_on * GRID))
    start = max(last - int(FINAL_BEATS * GRID), seed_steps)
    half = GRID // 2
    for s in range(start, last, half):
        x = (s + half / 2 - start) / max(last - start, 1)
        factor[s : min(s + half, last)] *= (1 + (FINAL_TEMPO**FINAL_Q - 1) * x) ** (1 / FINAL_Q)
    factor[last:] *= FINAL_TEMPO  # a fermata in the last bars is held on top of the ritardando
    changes = np.flatnonzero(np.diff(factor)) + 1
    tempos = [(0.0, tempo * float(factor[0]))]
    tempos += [(s / GRID, tempo * float(factor[s])) for s in changes]
    return [(b, round(bpm, 3)) for b, bpm in tempos]


def _pedal(notes: Sequence[tuple[float, float, int]], end: float) -> list[tuple[float, int]]:
    """(beat, CC64) for pedalling with the harmony: lifted as each new harmony is struck and put down again
    PEDAL_LIFT beats later, so the new chord is caught and the old one damped; up over rests."""
    by_onset: dict[float, list[tuple[float, int]]] = {}
    for a, b, p in notes:
        by_onset.setdefault(a, []).append((b, p))
    out: list[tuple[float, int]] = []
    down = False
    harmony: frozenset[int] = frozenset()
    bass = None
    changed_at = -1e9
    sounding_until = -1e9
    onsets = sorted(by_onset)
    for k, t in enumerate(onsets):
        group = by_onset[t]
        if down and t > sounding_until + 0.5:  # a rest: let the sound stop with the notes
            out.append((sounding_until, 0))
            down = False
        pcs = frozenset(p % 12 for _, p in group)
        low = min(p for _, p in group)
        new = (
            not down
            or (len(group) >= 2 and pcs != harmony)
            or (bass is not None and low < bass)  # a new, lower bass
            or (len(group) == 1 and t >= sounding_until)  # a single line: each note changes the pedal
            or t - changed_at >= 4
        )
        if new:
            nxt = onsets[k + 1] if k + 1 < len(onsets) else end
            if down:
                out.append((t, 0))
            out.append((t + min(PEDAL_LIFT, (nxt - t) / 2), 127))
            down, harmony, bass, changed_at = True, pcs, low, t
        else:
            harmony |= pcs
        sounding_until = max(sounding_until, max(b for b, _ in group))
    if down:
        out.append((end + PEDAL_RING, 0))
    return out
