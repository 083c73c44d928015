"""Harmonize a melody: the model writes alto, tenor and bass under a soprano that is given and kept.

BachBot showed that a left-to-right model over tokens can harmonize by fixing the soprano's tokens and
sampling the rest. Here each melody note becomes one four-voice chord, written as the encoding writes a
chord: the time shift to its onset (given), the bass, tenor and alto (sampled, lowest first), the melody's
pitch (given) and its duration (given). The network is stepped one token at a time from Python, and every
sampled pitch is masked to where its voice may go: below the voice above it, within its range, within an
octave of its upper neighbour (bass excepted), and, on the last chords, to a cadence.

Because the encoding writes a chord's lowest pitch first, the model chooses the bass before it reads the
melody note above it. So every chord is proposed by `K` particles at once and they are resampled by how
likely the model finds the given melody note and its duration after each proposal (sequential Monte
Carlo): the harmony that survives is the one under which the model itself would have sung this melody.

The output keeps the melody exactly: its onsets, durations and pitches are copied, never decoded from
tokens, so a duration the vocabulary lacks still comes back as it was given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bot.errors import BadSeed
from bot.music.encoding import GRID, MAX_DURATION, MAX_SHIFT, Event, Vocabulary
from bot.music.melody import Melody
from bot.options import Options

log = logging.getLogger(__name__)

PARTICLES = 8  # proposals per chord; more gains little once the melody's own likelihood steers them
# Where each lower voice may sound (MIDI pitches), a little wider than the chorales use them.
RANGES = {"alto": (53, 77), "tenor": (46, 70), "bass": (34, 64)}
MAX_GAP = 12  # soprano-alto and alto-tenor at most an octave apart, as the textbooks ask
MAX_BASS_GAP = 24  # tenor-bass may open wider
RELAX_PENALTY = 10.0  # nats off a particle's weight for each constraint it had to give up


class Steps(Protocol):
    """A next-token model stepped one token at a time over `k` rows."""

    k: int

    def start(self) -> np.ndarray:
        """Log-probabilities (k, V) of the first token after `<start>`, every row fresh."""

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Continue row `rows[i]` with `tokens[i]`; log-probabilities (k, V) of each row's next token."""


class NetworkSteps:
    """The LSTM through the sampler's compiled single step."""

    def __init__(self, sampler, k: int = PARTICLES):
        self.sampler, self.k = sampler, k
        self.states: list = []

    def start(self) -> np.ndarray:
        self.states = self.sampler.initial_states(self.k)
        return self.feed(np.full(self.k, self.sampler.vocab.start), np.arange(self.k))

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        logp, self.states = self.sampler.step(tokens, rows, self.states)
        return logp


class NumpySteps:
    """The same LSTM stepped in NumPy, from the sampler's fused weights.

    At a handful of rows one step is a few small matrix products; NumPy does them in a tenth of the time
    a framework takes to dispatch a compiled call, and the result does not depend on the Keras backend.
    Only networks with an embedding, tanh/sigmoid cells and a single dense head (the shipped kind) are
    stepped here; `steps_for` falls back to `NetworkSteps` for others.
    """

    def __init__(self, sampler, k: int = PARTICLES):
        self.k, self.start_token = k, sampler.vocab.start
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b, _, _ in sampler.fused]
        self.embed = np.asarray(sampler.embed.embeddings, np.float32)
        (dense,) = sampler.head
        self.kernel, self.bias = np.asarray(dense.kernel, np.float32), np.asarray(dense.bias, np.float32)
        self.hidden = sampler.hidden
        self.states: list[tuple[np.ndarray, np.ndarray]] = []

    @staticmethod
    def supports(sampler) -> bool:
        acts = {(a.__name__, g.__name__) for _, _, a, g in sampler.fused}
        dense = sampler.head[0] if len(sampler.head) == 1 else None
        return (
            sampler.embed is not None
            and acts == {("tanh", "sigmoid")}
            and dense is not None
            and getattr(dense, "activation", None) is not None
            and dense.activation.__name__ == "linear"
        )

    def start(self) -> np.ndarray:
        zeros = np.zeros((self.k, self.hidden), np.float32)
        self.states = [(zeros, zeros) for _ in self.layers]
        return self.feed(np.full(self.k, self.start_token), np.arange(self.k))

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        x = self.embed[np.asarray(tokens)]
        new = []
        for (w, b), (h, c) in zip(self.layers, self.states, strict=True):
            z = np.concatenate([x, h[rows]], axis=1) @ w + b
            i, f, g, o = np.split(z, 4, axis=1)  # Keras's gate order
            c = _sigmoid(f) * c[rows] + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            new.append((h, c))
            x = h
        self.states = new
        logits = (x @ self.kernel + self.bias).astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # the same function, without overflow for large |x|


def steps_for(sampler, k: int = PARTICLES) -> Steps:
    """The fastest stepper the sampler's network allows."""
    return NumpySteps(sampler, k) if NumpySteps.supports(sampler) else NetworkSteps(sampler, k)


class NgramSteps:
    """Any model with `distribution(context) -> probabilities` and an order `n` (the n-gram baseline)."""

    def __init__(self, ngram, start: int, k: int = PARTICLES):
        self.ngram, self.start_token, self.k = ngram, start, k
        self.contexts: list[tuple[int, ...]] = []

    def start(self) -> np.ndarray:
        self.contexts = [()] * self.k
        return self.feed(np.full(self.k, self.start_token), np.arange(self.k))

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        keep = self.ngram.n - 1
        # The n-gram pads a piece's beginning with <pad> (id 0); so does this context.
        self.contexts = [
            ((0,) * keep + self.contexts[r] + (int(t),))[-keep:] for t, r in zip(tokens, rows, strict=True)
        ]
        cache: dict[tuple, np.ndarray] = {}
        out = []
        for ctx in self.contexts:
            if ctx not in cache:
                cache[ctx] = np.log(np.maximum(self.ngram.distribution(ctx), 1e-30))
            out.append(cache[ctx])
        return np.stack(out)


# -- the cadence -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cadence:
    """Pitch classes the last chord (and the bass of the one before) must take."""

    final_bass: int
    final_chord: frozenset[int]
    penultimate_bass: int | None


def cadence_for(last: int, before: int | None, tonic: int, minor: bool) -> Cadence | None:
    """The cadence a chorale would end this melody with, in the key of `tonic`.

    Ending on a note of the tonic triad: a full close on I (in minor the major third is allowed too, the
    chorales' Picardy third), its bass prepared by the dominant when the note before fits V or V7. Ending on
    a note of the dominant triad: a half close on V. Otherwise the diatonic triad on IV, vi or ii that holds
    the note, with no preparation. A chromatic last note leaves the ending to the model.
    """
    last, third = last % 12, 3 if minor else 4
    triad = {
        "I": (0, third, 7),
        "V": (7, 11, 2),
        "IV": (5, 5 + third, 0),
        "vi": (8, 0, 3) if minor else (9, 0, 4),
        "ii": (2, 5, 8) if minor else (2, 5, 9),
    }
    for name in ("I", "V", "IV", "vi", "ii"):
        pcs = {(tonic + i) % 12 for i in triad[name]}
        if last not in pcs:
            continue
        if name == "I":
            pcs |= {(tonic + 3) % 12, (tonic + 4) % 12} if minor else set()
            dominant = {(tonic + i) % 12 for i in (7, 11, 2, 5)}
            prepared = before is not None and before % 12 in dominant
            return Cadence(tonic, frozenset(pcs), (tonic + 7) % 12 if prepared else None)
        root = (tonic + triad[name][0]) % 12
        return Cadence(root, frozenset(pcs), None)
    return None


# -- masks ------------------------------------------------------------------------------------------------
def _voice_masks(
    vocab: Vocabulary, melody: int, lower: np.ndarray, voice: str, strict: bool, pcs: frozenset[int] | None
) -> np.ndarray:
    """(k, V) allowed pitch tokens for `voice` under `melody`, given the voices already chosen (k, j)."""
    k = len(lower)
    pitches = np.arange(vocab.pitch_low, vocab.pitch_high + 1)
    allowed = np.zeros((k, len(vocab)), dtype=bool)
    lo, hi = RANGES[voice] if strict else (vocab.pitch_low, vocab.pitch_high)
    # Room for the voices still to come between this one and the melody, one semitone each at least.
    above = {"bass": 3, "tenor": 2, "alto": 1}[voice]
    ok = (pitches >= lo) & (pitches <= hi) & (pitches <= melody - above)
    if pcs is not None:
        ok &= np.isin(pitches % 12, list(pcs))
    if strict:
        # Leave room for the voices still to come above this one, each within its range and gaps.
        if voice == "bass":
            ok &= pitches <= RANGES["tenor"][1] - 1
            ok &= pitches >= melody - 2 * MAX_GAP - MAX_BASS_GAP
        elif voice == "tenor":
            ok &= pitches >= melody - 2 * MAX_GAP
        else:
            ok &= pitches >= melody - MAX_GAP
    for i in range(k):
        row = ok.copy()
        if lower.shape[1]:
            below = int(lower[i, -1])
            row &= pitches > below  # one pitch per voice: the encoding writes each pitch once per chord
            if strict and voice != "tenor":
                row &= pitches - below <= MAX_GAP
            elif strict:
                row &= pitches - below <= MAX_BASS_GAP
        allowed[i, vocab.pitch_base : vocab.duration_base] = row
    return allowed


def _masked_sample(logp: np.ndarray, allowed: np.ndarray, temperature: float, u: np.ndarray) -> tuple:
    """One token per row from `logp` restricted to `allowed`; also log of the allowed tempered mass."""
    z = np.where(allowed, logp / temperature, -np.inf)
    top = z.max(axis=1, keepdims=True)
    p = np.exp(z - top)
    mass = p.sum(axis=1)
    cdf = np.cumsum(p, axis=1) / mass[:, None]
    pick = np.minimum((cdf <= u[:, None]).sum(axis=1), logp.shape[1] - 1)
    return pick, np.log(mass) + top[:, 0]


def _nearest(values: Sequence[int], x: int) -> int:
    return min(values, key=lambda v: (abs(v - x), v))


# -- the harmonizer ---------------------------------------------------------------------------------------
def harmonize_line(
    steps: Steps,
    vocab: Vocabulary,
    notes: Sequence[Event],
    cadence: Cadence | None,
    temperature: float,
    rng: np.random.Generator,
    rules: bool = True,
) -> np.ndarray:
    """Alto, tenor and bass under each of `notes` (single pitches, no overlaps): an array (n, 3).

    Rows are particles; after each chord they are resampled by the tempered probability the model gives
    the melody's note and duration (times the mass the masks left it), and the survivor of the last
    chord is returned with its whole history. With `rules`, no voice may move in consecutive fifths
    or octaves with another (the textbooks' first rule, which the model alone breaks often).
    """
    k = steps.k
    n = len(notes)
    history = np.zeros((k, n, 3), dtype=np.int64)  # bass, tenor, alto per particle
    shifts = _shift_tokens(vocab, notes)
    logp = steps.start()
    rows = np.arange(k)
    for i, note in enumerate(notes):
        m = int(note.pitches[0])
        for s in shifts[i]:
            logp = steps.feed(np.full(k, s), rows)
            rows = np.arange(k)
        last = i == n - 1
        chosen = np.zeros((k, 0), dtype=np.int64)
        log_w = np.zeros(k)
        melody_id = vocab.pitch_id(min(max(m, vocab.pitch_low), vocab.pitch_high))
        dur = _nearest(vocab.durations, min(MAX_DURATION, max(1, round(note.duration * GRID))))
        dur_id = vocab.index[f"D{dur}"]
        # The chord before, when it ends where this one starts: parallels are heard only across a join.
        joined = i > 0 and abs(notes[i - 1].onset + notes[i - 1].duration - note.onset) < 1e-6
        before = (int(notes[i - 1].pitches[0]), history[:, i - 1]) if joined and rules else None
        for v, voice in enumerate(("bass", "tenor", "alto")):
            pcs = None
            if cadence is not None and last:
                pcs = frozenset({cadence.final_bass}) if voice == "bass" else cadence.final_chord
            elif (
                cadence is not None
                and cadence.penultimate_bass is not None
                and i == n - 2
                and voice == "bass"
            ):
                pcs = frozenset({cadence.penultimate_bass})
            # Masks from the strictest down, each row taking the first that leaves it a pitch: the last
            # chord keeps its cadence before the voice-leading rule, every other chord the rule first.
            if last:
                tries = [(True, pcs, True), (False, pcs, True), (True, pcs, False), (False, pcs, False)]
            else:
                tries = [(True, pcs, True), (False, pcs, True), (True, None, True), (False, None, True)]
            tries.append((False, None, False))
            allowed = np.zeros((k, len(vocab)), dtype=bool)
            for level, (strict, classes, rule) in enumerate(tries):
                empty = ~allowed.any(axis=1)
                if not empty.any():
                    break
                mask = _voice_masks(vocab, m, chosen, voice, strict, classes)
                if rule and before is not None:
                    mask &= _no_parallels(vocab, m, chosen, v, *before)
                allowed[empty] = mask[empty]
                # A particle that had to give up a constraint rarely survives the resampling.
                log_w[empty & mask.any(axis=1)] -= RELAX_PENALTY * level
            if not allowed.any(axis=1).all():
                raise BadSeed(f"a melody note ({m}) is too low to write three voices under it")
            token, mass = _masked_sample(logp, allowed, temperature, rng.random(k))
            log_w += mass
            chosen = np.concatenate([chosen, (vocab.pitch_low + token - vocab.pitch_base)[:, None]], axis=1)
            logp = steps.feed(token, np.arange(k))
        # What the model thinks of the given tokens after this chord weighs the particle: the melody
        # note, its duration and the time to the next note.
        log_w += logp[:, melody_id] / temperature
        logp = steps.feed(np.full(k, melody_id), np.arange(k))
        log_w += logp[:, dur_id] / temperature
        logp = steps.feed(np.full(k, dur_id), np.arange(k))
        if not last:
            log_w += logp[:, shifts[i + 1][0]] / temperature
        history[:, i] = chosen
        # Resample the particles by their weights; the next feed continues from the chosen rows.
        rows = _resample(log_w, rng)
        history = history[rows]
        logp = logp[rows]
    return history[0]


def _shift_tokens(vocab: Vocabulary, notes: Sequence[Event]) -> list[list[int]]:
    """The shift tokens before each note, chained and rounded as `Vocabulary.encode` writes them."""
    out, pos = [], 0
    for note in notes:
        delta = max(0, round(note.onset * GRID) - pos)
        shifts = []
        while delta > MAX_SHIFT:
            shifts.append(MAX_SHIFT)
            delta -= MAX_SHIFT
        shifts.append(_nearest(vocab.shifts, delta))
        pos += sum(shifts)
        out.append([vocab.index[f"S{s}"] for s in shifts])
    return out


def _no_parallels(
    vocab: Vocabulary, melody: int, chosen: np.ndarray, v: int, melody_before: int, before: np.ndarray
) -> np.ndarray:
    """(k, V): pitches for lower voice `v` (0 bass, 1 tenor, 2 alto) that make no consecutive fifth or
    octave with the melody or a voice already chosen, against the chord before (`before`, (k, 3))."""
    k = len(chosen)
    pitches = np.arange(vocab.pitch_low, vocab.pitch_high + 1)
    allowed = np.ones((k, len(vocab)), dtype=bool)
    for i in range(k):
        was = int(before[i, v])
        # (then, now, above): the other voice's pitch in the chord before and in this one, and whether it
        # sounds above this voice (the melody always does; bass and tenor lie below the tenor and alto).
        others = [(melody_before, melody, True)] + [
            (int(before[i, u]), int(chosen[i, u]), False) for u in range(v)
        ]
        bad = np.zeros(len(pitches), dtype=bool)
        for then, now, above in others:
            if then == now:
                continue  # that voice holds its pitch: any motion against it is oblique
            interval = (then - was) % 12 if above else (was - then) % 12
            if interval not in (0, 7):
                continue
            new = (now - pitches) % 12 if above else (pitches - now) % 12
            bad |= (new == interval) & (pitches != was)
        allowed[i, vocab.pitch_base : vocab.duration_base] = ~bad
    return allowed


def _resample(log_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: `k` row indices drawn in proportion to exp(log_w)."""
    w = np.exp(log_w - log_w.max())
    cdf = np.cumsum(w / w.sum())
    k = len(log_w)
    u = (rng.random() + np.arange(k)) / k
    return np.minimum(np.searchsorted(cdf, u), k - 1)


@dataclass
class Harmonization:
    """A harmonized melody with everything a reply needs (the same fields as a composition, plus the melody)."""

    name: str
    events: list[Event]  # four-voice chords, one per melody note
    melody: list[Event]  # the soprano as given, moved only as the key and the soprano's range required
    tempo: float
    options: object
    model: str
    key: str
    timings: dict[str, float] = field(default_factory=dict)
    seed_events: int = 0

    def midi(self) -> bytes:
        from bot.music.midi import midi_bytes

        return midi_bytes(self.events, tempo=self.tempo, program=self.options.instrument, name=self.name)

    @property
    def seconds(self) -> float:
        end = max((e.onset + e.duration for e in self.events), default=0.0)
        return end * 60.0 / self.tempo


def chords_under(notes: Sequence[Event], lower: np.ndarray) -> list[Event]:
    """One event per melody note: its three lower voices and the melody note, with the note's own timing."""
    return [
        Event(n.onset, n.duration, tuple(sorted({*map(int, lower[i]), int(n.pitches[0])})), n.velocity)
        for i, n in enumerate(notes)
    ]


def harmonize_melody(
    steps: Steps,
    vocab: Vocabulary,
    melody: Melody,
    key: tuple[int, bool],
    temperature: float,
    rng_seed: int,
    rules: bool = True,
) -> tuple[list[Event], dict[str, float]]:
    """The four-voice chords for `melody` in the key (tonic pitch class, minor) and the time it took."""
    t0 = time.perf_counter()
    notes = melody.notes
    tonic, minor = key
    before = notes[-2].pitches[0] if len(notes) > 1 else None
    cadence = cadence_for(notes[-1].pitches[0], before, tonic, minor)
    from threadpoolctl import threadpool_limits

    # The steps are small matrix products: BLAS threads would only wait on each other (and on a busy
    # machine, on everyone else), so one thread does them.
    with threadpool_limits(1, user_api="blas"):
        lower = harmonize_line(
            steps, vocab, notes, cadence, temperature, np.random.default_rng(rng_seed), rules
        )
    return chords_under(notes, lower), {"sample": time.perf_counter() - t0}


def parse_key(name: str) -> tuple[int, bool]:
    """(tonic pitch class, minor) of a key named like `estimate_key` names them ("E- minor")."""
    from bot.model.composer import _NAMES

    tonic, _, mode = name.partition(" ")
    return _NAMES.index(tonic), mode == "minor"


def harmonize(composer, options: Options, melody: Melody) -> Harmonization:
    """A four-part chorale on `melody` with the composer's model; the same options and RNG seed give the same."""
    from bot.model.composer import estimate_key, safe_name

    options = options.check().with_rng_seed()
    key = estimate_key(melody.notes)
    steps = steps_for(composer.sampler)
    events, timings = harmonize_melody(
        steps, composer.vocab, melody, parse_key(key), options.temperature, options.rng_seed
    )
    return Harmonization(
        name=f"chorale-{safe_name(melody.name)}-{options.rng_seed}",
        events=events,
        melody=list(melody.notes),
        tempo=float(options.tempo or melody.tempo),
        options=options,
        model=composer.model.name,
        key=key,
        timings=timings,
    )
