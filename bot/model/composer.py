"""The composing pipeline as a library call: seed -> primer -> sampler -> events -> .mid, .wav, .png.

`etude compose`, `etude bench`, the bot's worker and the Redis workers all go through `Composer`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot.model.network import LoadedModel
from bot.model.network import load as load_model
from bot.model.sample import Request, Sampler
from bot.music.encoding import PIANO_HIGH, PIANO_LOW, Event, Piece, Vocabulary, fold_pitch, transpose
from bot.music.midi import DEFAULT_LIMITS, SeedLimits, midi_bytes, read_midi
from bot.options import DEFAULT_TEMPO, Options

log = logging.getLogger(__name__)


@dataclass
class Seed:
    """A seed file made ready for the model: its primer tokens and how it was moved."""

    piece: Piece
    events: list[Event]  # in the piano range, as the user will hear them
    primer: tuple[int, ...]
    shift: int  # semitones the seed was moved to fit the model; the output is moved back
    meta: dict = field(default_factory=dict)


@dataclass
class Composition:
    """A finished piece with everything a reply needs to describe it."""

    name: str
    events: list[Event]  # what the .mid holds, seed first when it was included
    seed_events: int  # how many of `events` are the seed
    tempo: float
    options: Options
    model: str
    key: str
    timings: dict[str, float]

    def midi(self) -> bytes:
        return midi_bytes(self.events, tempo=self.tempo, program=self.options.instrument, name=self.name)

    @property
    def seconds(self) -> float:
        end = max((e.onset + e.duration for e in self.events), default=0.0)
        return end * 60.0 / self.tempo


# -- seeds --------------------------------------------------------------------------------------------------
def to_piano_range(events: Sequence[Event]) -> tuple[list[Event], int]:
    """Pitches outside A0-C8 moved by octaves into it; returns the events and how many pitches moved."""
    moved = 0
    out = []
    for e in events:
        ps = [fold_pitch(p, PIANO_LOW, PIANO_HIGH) for p in e.pitches]
        moved += sum(q != p for p, q in zip(e.pitches, ps))
        out.append(Event(e.onset, e.duration, tuple(sorted(set(ps))), e.velocity))
    return out, moved


def fit_shift(events: Sequence[Event], vocab: Vocabulary) -> int:
    """The whole-octave move that brings most of the seed's pitches into the model's range."""
    pitches = np.array([p for e in events for p in e.pitches])
    best, best_in = 0, -1
    for k in (0, -12, 12, -24, 24, -36, 36):
        inside = int(((pitches + k >= vocab.pitch_low) & (pitches + k <= vocab.pitch_high)).sum())
        if inside > best_in:
            best, best_in = k, inside
    return best


def prepare_seed(
    data: bytes, vocab: Vocabulary, name: str = "seed", limits: SeedLimits = DEFAULT_LIMITS
) -> Seed:
    """Parse an untrusted seed under `limits`, move it into the model's range, and tokenise it."""
    piece = read_midi(data, name, limits)
    events, moved = to_piano_range(piece.events)
    shift = fit_shift(events, vocab)
    inside = transpose(events, shift)
    # encode() maps pitches still outside the range by octaves and times to the nearest known value.
    primer = tuple(vocab.encode(inside))
    outside = sum(1 for e in inside for p in e.pitches if not vocab.pitch_low <= p <= vocab.pitch_high)
    meta = {
        **piece.meta,
        "pitches_moved_to_piano_range": moved,
        "pitches_folded_into_model_range": outside,
        "transposed": shift,
    }
    return Seed(piece, events, primer, shift, meta)


# -- key, for the reply ---------------------------------------------------------------------------------------
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_NAMES = ["C", "C#", "D", "E-", "E", "F", "F#", "G", "A-", "A", "B-", "B"]


def estimate_key(events: Sequence[Event]) -> str:
    """Krumhansl-Schmuckler: the key whose profile best matches the duration-weighted pitch classes."""
    hist = np.zeros(12)
    for e in events:
        for p in e.pitches:
            hist[p % 12] += e.duration
    if not hist.any():
        return "unknown"
    best, name = -2.0, "unknown"
    for tonic in range(12):
        for profile, mode in ((_MAJOR, "major"), (_MINOR, "minor")):
            r = np.corrcoef(hist, np.roll(profile, tonic))[0, 1]
            if r > best:
                best, name = r, f"{_NAMES[tonic]} {mode}"
    return name


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:60] or "etude"


# -- the composer -------------------------------------------------------------------------------------------
class Composer:
    """A loaded model and its compiled sampler; compose many requests in one batched call."""

    def __init__(self, model: LoadedModel | str | Path | None = None, jit: bool = True):
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        self.sampler = Sampler(self.model, jit=jit)

    @property
    def vocab(self) -> Vocabulary:
        return self.model.vocab

    def seed(self, data: bytes, name: str = "seed", limits: SeedLimits = DEFAULT_LIMITS) -> Seed:
        return prepare_seed(data, self.vocab, name, limits)

    def compose(self, jobs: Sequence[tuple[Options, Seed | None]]) -> list[Composition]:
        """Sample every job in one batch; each result is what it would be alone with the same options."""
        jobs = [(o.check().with_rng_seed(), s) for o, s in jobs]
        requests = [
            Request(s.primer if s else (self.vocab.start,), o.length, o.temperature, o.top_p, o.rng_seed)
            for o, s in jobs
        ]
        t0 = time.perf_counter()
        streams = self.sampler.sample(requests)
        sample_s = time.perf_counter() - t0
        out = []
        for (opts, seed), tokens in zip(jobs, streams):
            t1 = time.perf_counter()
            new = self.vocab.decode(tokens)
            if seed is not None:
                new = transpose(new, -seed.shift)
                start = seed.events[-1].onset if seed.events else 0.0
                # The continuation's first shift counts from the seed's last onset.
                new = [Event(e.onset + start, e.duration, e.pitches, e.velocity) for e in new]
                new, _ = to_piano_range(new)
                if not opts.include_seed:
                    first = new[0].onset if new else 0.0
                    new = [Event(e.onset - first, e.duration, e.pitches, e.velocity) for e in new]
            events = (seed.events + new) if (seed and opts.include_seed) else new
            tempo = opts.tempo or (seed.piece.tempo if seed else DEFAULT_TEMPO)
            name = (
                f"etude-{opts.rng_seed}"
                if seed is None
                else f"etude-{safe_name(seed.piece.name)}-{opts.rng_seed}"
            )
            out.append(
                Composition(
                    name=name,
                    events=events,
                    seed_events=len(seed.events) if seed and opts.include_seed else 0,
                    tempo=float(tempo),
                    options=opts,
                    model=self.model.name,
                    key=estimate_key(events),
                    timings={"sample": sample_s, "decode": time.perf_counter() - t1},
                )
            )
        return out

    def compose_one(self, options: Options, seed: Seed | None = None) -> Composition:
        return self.compose([(options, seed)])[0]
