"""The composing pipeline as a library call: seed -> primer -> sampler -> events -> .mid, .wav, .png.

`etude compose`, `etude bench`, the bot's worker and the Redis workers all go through `Composer`.

Keys: the network writes in C major or A minor (it was trained on pieces moved there), opening with a mode
token. A seed is moved there from its estimated key before it primes the network; the output is moved back
into the key asked for, the seed's, or, with neither, one the RNG seed draws from the corpus's own keys.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from bot.errors import ModelNotFound
from bot.model import short_term
from bot.model.conditioning import statistics
from bot.model.form import PLANNED_STYLES
from bot.model.network import LoadedModel
from bot.model.network import load as load_model
from bot.model.sample import MAX_PRIMER_TOKENS, Request, Sampler, bar_start
from bot.model.steps import NumpySteps
from bot.model.styles import (
    FITTED_NETWORK_STYLES,
    LINE_STYLE,
    check_style,
    default_style,
    is_one_line,
    offered_styles,
    seed_losses,
    style_network,
    style_network_names,
)
from bot.music.encoding import PIANO_HIGH, PIANO_LOW, Vocabulary
from bot.music.events import GRID, Event, Piece, fold_pitch, transpose
from bot.music.keys import Key, draw_key, estimate_key, key_fit
from bot.music.meter import Meter, meter_of, seed_grid
from bot.music.midi import DEFAULT_LIMITS, SeedLimits, read_midi
from bot.music.perform import Performance, SeedStyle, perform, seed_style
from bot.options import DEFAULT_TEMPO, Options

log = logging.getLogger(__name__)

KEY_SOURCES = {
    "asked": "",
    "seed": " (the seed's key)",
    "drawn": " (drawn by the RNG seed)",
    "drawn-unknown-seed": " (the seed's key could not be told, so the RNG seed chose this one)",
    # A harmonization's (bot.model.harmonize):
    "melody": " (the melody's key)",
    "relative": " (the key asked for is in the other mode: its relative, in the melody's mode)",
}


@dataclass
class Seed:
    """A seed file made ready for the model: its events in the piano range and the key they are in."""

    piece: Piece
    events: list[Event]  # in the piano range, as the user will hear them
    key: Key | None  # None: the notes do not say a key (one repeated note, atonal noise)
    meta: dict = field(default_factory=dict)
    meter: Meter = field(default_factory=Meter)  # its time signature and where its bars start
    grid: int = 0  # the onsets' grid it keeps to (`meter.seed_grid`), which the continuation keeps too


@dataclass
class Composition:
    """A finished piece with everything a reply needs to describe it."""

    name: str
    events: list[Event]  # what the .mid holds, seed first when it was included
    seed_events: int  # how many of `events` are the seed
    tempo: float
    options: Options
    model: str
    key: str  # the key it is written in, one of bot.options.KEYS
    timings: dict[str, float]
    key_source: str = "asked"  # one of KEY_SOURCES
    meter: Meter = field(default_factory=lambda: Meter(source="default"))  # of `events`' own times
    style: str = "chorale"  # the style token the piece opened with
    style_source: str = "default"  # "asked", "seed" (the style that fits the seed best) or "default"
    network_alone: bool = False  # the seed was too short for the short-term model (`short_term`)
    seed_style: SeedStyle | None = None  # how the seed was played, when there was one

    @cached_property
    def performance(self) -> Performance:
        """The piece as played (`bot.music.perform`): what the .mid holds and the synth plays."""
        return perform(
            self.events,
            self.tempo,
            self.options.instrument,
            self.options.performance,
            self.seed_events,
            self.seed_style,
            self.meter,
        )

    def midi(self) -> bytes:
        return self.performance.midi(self.name)

    @property
    def key_text(self) -> str:
        """The key and where it came from, as the reply and the command line show it."""
        return self.key + KEY_SOURCES.get(self.key_source, "")

    @property
    def said(self) -> list[str]:
        """What a reply tells the user beyond the options: the style that fits the seed best, a meter that
        was assumed, not read, a seed too short for the short-term model."""
        said = {
            "seed": [f"written as {self.style}, the style that fits the seed best"],
            "line": [f"written as {self.style}: the seed is a single line, a tune"],
        }.get(self.style_source, [])
        said += [self.meter.assumed] if self.meter.assumed else []
        return said + ([short_term.FALLBACK_NOTE] if self.network_alone else [])

    @property
    def onsets(self) -> int:
        """Notes and chords after the seed: distinct onset times."""
        return len({e.onset for e in self.events[self.seed_events :]})

    @property
    def seconds(self) -> float:
        """How long the piece plays, its tempo map applied."""
        end = max((n.end for n in self.performance.notes), default=0.0)
        return self.performance.seconds(end)


# -- seeds --------------------------------------------------------------------------------------------------
def to_piano_range(events: Sequence[Event]) -> tuple[list[Event], int]:
    """Pitches outside A0-C8 moved by octaves into it; returns the events and how many pitches moved."""
    moved = 0
    out = []
    for e in events:
        ps = [fold_pitch(p, PIANO_LOW, PIANO_HIGH) for p in e.pitches]
        moved += sum(q != p for p, q in zip(e.pitches, ps))
        out.append(Event(e.onset, e.duration, tuple(sorted(set(ps))), e.velocity, e.fermata))
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
    """Parse an untrusted seed under `limits`, bring it into the piano range and estimate its key."""
    piece = read_midi(data, name, limits)
    events, moved = to_piano_range(piece.events)
    fit = key_fit(events)
    key = estimate_key(events)
    meter = meter_of(events, piece.meta.get("time_signatures", []), piece.meta.get("tempo_changes", 0))
    grid = seed_grid(events)
    meta = {
        **piece.meta,
        "pitches_moved_to_piano_range": moved,
        "key": key.name if key else None,
        "key_fit": round(fit[1], 3) if fit else None,
        "meter": f"{meter.name} from {meter.downbeat:g} ({meter.source})",
        "grid_steps": grid,
    }
    return Seed(piece, events, key, meta, meter, grid)


def hold_last_chord(events: Sequence[Event], beats: float = 2.0) -> list[Event]:
    """The notes of the last onset held for at least `beats` and as long as anything else sounds."""
    if not events:
        return list(events)
    last = max(e.onset for e in events)
    until = max(max(e.onset + e.duration for e in events), last + beats)
    return [
        Event(e.onset, until - e.onset, e.pitches, e.velocity, e.fermata) if e.onset == last else e
        for e in events
    ]


def too_short(seed: Seed | None) -> bool:
    """Whether a seed has too few onsets for the short-term model to learn from; no seed is not one: an
    unseeded piece's short-term model learns from the piece as it is written."""
    return seed is not None and len({e.onset for e in seed.events}) < short_term.MIN_SEED_ONSETS


def short_term_weight(seed: Seed | None) -> float:
    """How much the piece's own model weighs beside the network (`bot.model.short_term`): a seed's motifs
    come back; a seed too short to learn from, and an unseeded piece, are the network's alone."""
    if seed is None:
        return short_term.UNSEEDED_WEIGHT
    return 0.0 if too_short(seed) else short_term.WEIGHT


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:60] or "etude"


# -- the composer -------------------------------------------------------------------------------------------
class Composer:
    """A loaded model and its compiled sampler; compose many requests in one batched call."""

    def __init__(self, model: LoadedModel | str | Path | None = None):
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        # The short-term model's weight for every seed, None for `short_term_weight`'s: `etude eval
        # --methods` sets 0 to hear the network alone.
        self.seed_short_term: float | None = None
        # Whether a network told statistics (`bot.model.conditioning`) hears a seed's; `etude eval
        # --methods` sets False to hear it without them.
        self.seed_statistics = True
        self._writers: dict[str, Composer] = {}
        try:
            self.sampler = Sampler(self.model)
        except Exception as e:  # weights that load but do not fit the config or vocabulary beside them
            raise ModelNotFound(
                f"the model in {self.model.path} does not fit its own config ({e})"[:300]
            ) from e

    @property
    def vocab(self) -> Vocabulary:
        return self.model.vocab

    @cached_property
    def own_network_styles(self) -> tuple[str, ...]:
        """The styles a network of their own writes beside this model (`bot.model.styles`)."""
        return style_network_names(self.model)

    def writer(self, style: str) -> Composer:
        """The composer whose network writes `style`: the style's own network (loaded the first time it
        is asked for or fitted to a seed), or this one."""
        if style not in self.own_network_styles:
            return self
        if style not in self._writers:
            self._writers[style] = Composer(style_network(self.model, style))
        return self._writers[style]

    def seed(self, data: bytes, name: str = "seed", limits: SeedLimits = DEFAULT_LIMITS) -> Seed:
        return prepare_seed(data, self.vocab, name, limits)

    def style(self, options: Options, seed: Seed | None) -> tuple[str, str]:
        """The style to write in and where it came from ("asked", "line", "seed" or "default"); with a seed
        and no style asked for, `LINE_STYLE` for a seed of one line when a network of its own writes it,
        else the one of the network's offered styles (and of the fitted styles' own networks) under which
        the seed is likeliest.

        A style a network of its own writes is fitted by likelihood only when that network learnt all the
        main network's music and more (`FITTED_NETWORK_STYLES`): otherwise two networks' likelihoods differ
        by how well each learnt music at all, not by style (README, "Training data and licences"), and the
        seed's texture decides."""
        if options.style:
            if options.style not in self.own_network_styles:
                check_style(self.model, options.style)
            return options.style, "asked"
        if seed is not None and LINE_STYLE in self.own_network_styles and is_one_line(seed.events):
            return LINE_STYLE, "line"
        known = [s for s in offered_styles(self.model) if s not in self.own_network_styles]
        if seed is None or len(known) < 2 or not NumpySteps.supports(self.model):
            return default_style(self.model), "default"
        _, _, primer, _, last_frame = self.plan(options, seed, known[0])
        # The primer's time begins where the seed's last frame lies in its bar, less the time it spans.
        start = bar_start(self.vocab, primer, seed.meter.bar_steps, seed.meter.position(last_frame))
        losses = seed_losses(self.model, primer, known, seed.meter, start)
        for style in (s for s in FITTED_NETWORK_STYLES if s in self.own_network_styles):
            network = self.writer(style).model
            if NumpySteps.supports(network):
                losses.update(seed_losses(network, primer, [style], seed.meter, start))
        seed.meta["style_losses"] = {s: round(v, 4) for s, v in losses.items()}
        return min(losses, key=losses.__getitem__), "seed"

    def plan(
        self, options: Options, seed: Seed | None, style: str | None = None
    ) -> tuple[Key, str, tuple[int, ...], int, float]:
        """What one job feeds the sampler: its key and where that came from, the primer (opening with
        `style`, by default the model's default style), the semitones that move the model's output back
        into the key, and the time of the primer's last frame.

        A seed is moved to C major / A minor from its own key (or, when it does not say one, from the key
        the RNG seed draws), then by whole octaves into the range the network learned.
        """
        if options.key:
            key, source = Key.parse(options.key), "asked"
        elif seed is not None and seed.key is not None:
            key, source = seed.key, "seed"
        else:
            key = draw_key(self.vocab.key_counts, options.rng_seed)
            source = "drawn" if seed is None else "drawn-unknown-seed"
        head = self.vocab.head(key.mode, style or default_style(self.model))
        if seed is None:
            return key, source, tuple(head), -key.to_reference(), 0.0
        moved = transpose(seed.events, (seed.key or key).to_reference())
        octave = fit_shift(moved, self.vocab)
        ids, last_frame = self.vocab.encode_frames(transpose(moved, octave), head, end=False)
        primer = tuple(self.vocab.trim(ids, MAX_PRIMER_TOKENS))
        return key, source, primer, -octave - key.to_reference(), last_frame

    def told(self, primer: Sequence[int]) -> tuple[float, ...]:
        """The statistics of a seed's primer, for a network told them; empty otherwise."""
        if not (self.model.config.stats_input and self.seed_statistics):
            return ()
        return tuple(float(x) for x in statistics(self.vocab, primer))

    def compose(self, jobs: Sequence[tuple[Options, Seed | None]]) -> list[Composition]:
        """Sample every job in one batch; each result is what it would be alone with the same options."""
        jobs = [(o.check().with_rng_seed(), s) for o, s in jobs]
        styles = [self.style(o, s) for o, s in jobs]
        jobs = [(o.for_style(style), s) for (o, s), (style, _) in zip(jobs, styles)]
        plans = [self.plan(o, s, style) for (o, s), (style, _) in zip(jobs, styles)]
        requests = [
            Request(
                plan[2],
                o.length,
                o.temperature,
                o.top_p,
                o.rng_seed,
                grid=s.grid if s is not None else 0,
                phase=round(plan[4] * GRID) % GRID,
                short_term=short_term_weight(s)
                if s is None or self.seed_short_term is None
                else self.seed_short_term,
                bar=s.meter.bar_steps if s is not None else 4 * GRID,
                bar_pos=s.meter.position(plan[4]) if s is not None else 0,
                # A seed's own phrases come back through the short-term model.
                form=PLANNED_STYLES.get(style, 0) if s is None else 0,
                stats=self.writer(style).told(plan[2]) if s is not None else (),
            )
            for (o, s), plan, (style, _) in zip(jobs, plans, styles)
        ]
        t0 = time.perf_counter()
        # One batch per network: a style with a network of its own is sampled by it.
        batches: dict[str | None, list[int]] = {}
        for i, (style, _) in enumerate(styles):
            batches.setdefault(style if style in self.own_network_styles else None, []).append(i)
        streams: list = [None] * len(requests)
        for style, mine in batches.items():
            sampler = self.sampler if style is None else self.writer(style).sampler
            for i, stream in zip(mine, sampler.sample([requests[i] for i in mine])):
                streams[i] = stream
        sample_s = time.perf_counter() - t0
        out = []
        for (opts, seed), (key, source, _, back, last_frame), (style, style_source), tokens in zip(
            jobs, plans, styles, streams
        ):
            t1 = time.perf_counter()
            new = transpose(self.vocab.decode(tokens), back)
            # The continuation's first shift counts from the primer's last frame.
            new = [Event(e.onset + last_frame, e.duration, e.pitches, e.velocity, e.fermata) for e in new]
            new, _ = to_piano_range(new)
            seed_events: list[Event] = []
            meter = Meter(source="default") if seed is None else seed.meter
            if seed is not None and opts.include_seed:
                # The seed sounds in the key of the piece: moved only when another key was asked for.
                seed_events, _ = to_piano_range(
                    transpose(seed.events, (seed.key or key).to_reference() - key.to_reference())
                )
            elif seed is not None and new:
                # The file starts on the downbeat of the seed's bar where the continuation begins (a rest
                # up to its first note), so pasted after the seed it keeps the seed's bars.
                bar = meter.bar_start(new[0].onset)
                new = [Event(e.onset - bar, e.duration, e.pitches, e.velocity, e.fermata) for e in new]
                meter = meter.moved(-bar)
            events = seed_events + hold_last_chord(new)
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
                    seed_events=len(seed_events),
                    tempo=float(tempo),
                    options=opts,
                    model=self.writer(style).model.name,
                    key=key.name,
                    timings={"sample": sample_s, "decode": time.perf_counter() - t1},
                    key_source=source,
                    meter=meter,
                    style=style,
                    style_source=style_source,
                    seed_style=seed_style(seed.piece) if seed is not None else None,
                    network_alone=too_short(seed),
                )
            )
        return out

    def compose_one(self, options: Options, seed: Seed | None = None) -> Composition:
        return self.compose([(options, seed)])[0]
