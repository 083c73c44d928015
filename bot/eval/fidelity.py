"""Seed fidelity: does a continuation keep what a listener hears in its seed? `etude eval --fidelity`.

Each held-out piece (`bot.eval.heldout`) is cut into a seed of `SEED_BEATS` beats and its real next
`SEED_BEATS` (a piece shorter than twice that is cut into two halves at a whole beat, each at least
`MIN_BEATS`). The seed, written as a MIDI file and read back like any user's, is continued through the
public `Composer` for as many onsets as the real next part has. Per feature, three distances to the seed:
the real next part's (what the composer wrote), the model's, and that of a Bach chorale excerpt as long as
the real next part (validation chorales, one after another; what "ignore the seed, write a chorale" gives).

    fidelity = (d(chorale, seed) - d(model, seed)) / (d(chorale, seed) - d(real next, seed))

on distances averaged over the seeds of a group: 1 when the model is as close to the seed as the real
continuation, 0 when no closer than a chorale, below 0 when further. When the chorale and the real next
part lie close (a gap under `MIN_GAP`, or under a third of the chorale's distance), the feature cannot
tell them apart on that group and is left out (shown as a dash) rather than divided by almost nothing.

The card's seed-fidelity section is rendered here, beside the measure, and registered with
`bot.model.card` (which may not import evaluation) when this module is imported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bot.model.card import register_section
from bot.music import analysis, keys
from bot.music.events import Event, Piece
from bot.music.phrases import seed_passage_returns
from bot.music.stats import DURATION_CLASSES, duration_histogram, histogram_distance, notes_per_onset

SEED_BEATS = 64
MIN_BEATS = 16  # a half shorter than four 4/4 bars says too little about a piece's rhythm
# No ratio where the feature hardly separates the chorale from the real next part: their gap must be at
# least MIN_GAP and a third of the chorale's distance (the chorale half as far again as the real part).
MIN_GAP, MIN_SHARE = 0.02, 1 / 3
GRID_SHARE = 0.9  # a passage keeps an eighth-note grid when this share of its onsets lie on it
RNG_SEED = 3000  # seed i is continued with RNG seed RNG_SEED + i
CHORALE_SEEDS, QUICK_CHORALE_SEEDS = 8, 2
QUICK_PER_STYLE = 2
POSITIONS = 12  # onset positions inside the beat, in twelfths (the encoding's grid)

SIDES = ("real", "model", "chorale")  # the real next part, the continuation, a chorale excerpt
FEATURES: tuple[tuple[str, str], ...] = (
    ("pitch_classes", "pitch-class histogram (TV)"),
    ("notes_per_onset", "notes per onset (abs. log ratio)"),
    ("durations", "durations histogram (TV)"),
    ("inter_onsets", "inter-onset histogram (TV)"),
    ("beat_positions", "onset position inside the beat (TV)"),
    ("onsets_per_beat", "onsets per beat (abs. log ratio)"),
    ("mean_pitch", "mean pitch (semitones / 12)"),
)
GROUPS = {
    "piano": ("piano",),
    "songs": ("song",),
    "trained styles": ("chorale", "renaissance", "classical"),
    "folk": ("folk",),
}


# -- cutting ------------------------------------------------------------------------------------------------
def clip(events: Sequence[Event], start: float, end: float, shift: float = 0.0) -> list[Event]:
    """The events that start inside [start, end), cut off at `end`, moved by `shift` beats."""
    return [
        Event(e.onset + shift, min(e.onset + e.duration, end) - e.onset, e.pitches, e.velocity, e.fermata)
        for e in events
        if start <= e.onset < end and e.pitches
    ]


@dataclass
class Cut:
    """A seed and its real next part, both timed from the seed's first beat."""

    name: str
    style: str
    seed: list[Event]
    real: list[Event]
    beats: float  # the length of each
    tempo: float


def cut(piece: Piece, beats: int = SEED_BEATS) -> Cut | None:
    """`piece` cut into a seed and its real next part (None when its halves would be too short)."""
    events = [e for e in piece.events if e.pitches]
    if not events:
        return None
    start = math.floor(min(e.onset for e in events))
    total = max(e.onset + e.duration for e in events) - start
    half = min(beats, math.floor(total / 2))
    if half < MIN_BEATS:
        return None
    seed = clip(events, start, start + half, -start)
    real = clip(events, start + half, start + 2 * half, -start)
    if len(onsets(seed)) < 2 or len(onsets(real)) < 2:
        return None
    return Cut(piece.name, piece.meta.get("style", "other"), seed, real, float(half), piece.tempo)


def chorale_excerpt(chorales: Sequence[Piece], first: int, beats: float, skip: str = "") -> list[Event]:
    """`beats` beats of validation chorales played one after another from chorale `first` (leaving out
    the one named `skip`), each starting on the whole beat after the one before ends."""
    pool = [p for p in chorales if p.name != skip and p.events]
    out: list[Event] = []
    t = 0.0
    k = first
    while t < beats and pool:
        events = [e for e in pool[k % len(pool)].events if e.pitches]
        k += 1
        if not events:
            continue
        begin = min(e.onset for e in events)
        out += clip(events, begin, begin + beats - t, t - begin)
        t = math.ceil(t + max(e.onset + e.duration for e in events) - begin)
    return out


# -- features and distances --------------------------------------------------------------------------------
def onsets(events: Sequence[Event]) -> list[float]:
    return sorted({round(e.onset * analysis.TICKS) / analysis.TICKS for e in events if e.pitches})


def class_histogram(values: Sequence[float]) -> np.ndarray:
    """Share of `values` (beats) in each of `DURATION_CLASSES`, each in the nearest class on a log scale."""
    centres = np.log2(DURATION_CLASSES)
    if not len(values):
        return np.zeros(len(centres))
    idx = np.abs(np.log2(np.maximum(np.asarray(values, float), 1e-3))[:, None] - centres[None, :]).argmin(1)
    hist = np.bincount(idx, minlength=len(centres)).astype(float)
    return hist / hist.sum()


def on_grid_share(events: Sequence[Event]) -> float:
    """Share of onsets on a beat or a half-beat."""
    ts = np.array(onsets(events))
    return float(np.mean(np.abs(ts * 2 - np.round(ts * 2)) < 1e-3)) if len(ts) else 0.0


def features(events: Sequence[Event]) -> dict:
    """What a listener hears in a passage, as the fidelity table compares it."""
    events = [e for e in events if e.pitches]
    ts = np.array(onsets(events))
    pcs = np.bincount([p % 12 for e in events for p in e.pitches], minlength=12).astype(float)
    pos = np.round((ts - np.floor(ts)) * POSITIONS).astype(int) % POSITIONS
    positions = np.bincount(pos, minlength=POSITIONS).astype(float)
    gaps = np.diff(ts)
    pitches = [p for e in events for p in e.pitches]
    return {
        "pitch_classes": pcs / max(pcs.sum(), 1),
        "notes_per_onset": notes_per_onset(analysis.moments(events)),
        "durations": duration_histogram(events),
        "inter_onsets": class_histogram(gaps),
        "beat_positions": positions / max(positions.sum(), 1),
        # n onsets over the span of n inter-onset gaps, so a passage's last gap counts as its mean one
        "onsets_per_beat": len(ts) / (gaps.mean() * len(ts)) if len(gaps) and gaps.mean() > 0 else None,
        "mean_pitch": float(np.mean(pitches)) if pitches else None,
    }


def distances(a: dict, b: dict) -> dict[str, float | None]:
    """Per feature, how far passage `b` is from passage `a` (0: the same)."""
    out: dict[str, float | None] = {}
    for key, _ in FEATURES:
        x, y = a[key], b[key]
        if x is None or y is None:
            out[key] = None
        elif key == "mean_pitch":
            out[key] = abs(x - y) / 12
        elif key in ("notes_per_onset", "onsets_per_beat"):
            out[key] = abs(math.log(y / x))
        else:
            out[key] = histogram_distance(x, y)
    return out


def fidelity(real: float, model: float, chorale: float) -> float | None:
    """(d(chorale) - d(model)) / (d(chorale) - d(real)); None when that denominator is below `MIN_GAP` or
    a third of d(chorale): a ratio over almost nothing would swing on noise."""
    gap = chorale - real
    return (chorale - model) / gap if gap >= max(MIN_GAP, chorale * MIN_SHARE) else None


# -- one seed, a group of seeds -----------------------------------------------------------------------------
def score_seed(c: Cut, continuation: Sequence[Event], chorale: Sequence[Event]) -> dict:
    """The three distances to the seed per feature, whether grid and key are kept, and whether a passage of
    8 notes of the seed's tune comes back."""
    f_seed = features(c.seed)
    sides = dict(zip(SIDES, (c.real, continuation, chorale)))
    seed_key = keys.estimate_key(c.seed, min_fit=None)

    def keeps_key(events: Sequence[Event]) -> bool | None:
        k = keys.estimate_key(events, min_fit=None)
        return None if seed_key is None else k is not None and keys.fifths_distance(seed_key, k) <= 1

    return {
        "name": c.name,
        "style": c.style,
        "beats": c.beats,
        "onsets": len(onsets(c.real)),
        "real": distances(f_seed, features(c.real)),
        "model": distances(f_seed, features(continuation)),
        "chorale": distances(f_seed, features(chorale)),
        "seed_on_grid": on_grid_share(c.seed) >= GRID_SHARE,
        "real_on_grid": on_grid_share(c.real) >= GRID_SHARE,
        "model_on_grid": on_grid_share(continuation) >= GRID_SHARE,
        "real_keeps_key": keeps_key(c.real),
        "model_keeps_key": keeps_key(continuation),
        **{f"{side}_brings_back": seed_passage_returns(c.seed, p) for side, p in sides.items()},
    }


def summarize(rows: Sequence[dict]) -> dict:
    """Mean distances per feature over seeds, their fidelity, the mean fidelity, grid and key counts."""
    table = {}
    for key, _ in FEATURES:
        means = {}
        for side in ("real", "model", "chorale"):
            values = [
                r[side][key] for r in rows if all(r[s][key] is not None for s in ("real", "model", "chorale"))
            ]
            means[side] = round(float(np.mean(values)), 4) if values else None
        f = None if None in means.values() else fidelity(means["real"], means["model"], means["chorale"])
        table[key] = {**means, "fidelity": None if f is None else round(f, 4)}
    scored = [v["fidelity"] for v in table.values() if v["fidelity"] is not None]
    grid = [r for r in rows if r["seed_on_grid"]]
    keyed = [r for r in rows if r["model_keeps_key"] is not None]
    return {
        "seeds": len(rows),
        "features": table,
        "mean_fidelity": round(float(np.mean(scored)), 4) if scored else None,
        "grid_seeds": len(grid),
        "grid_kept": sum(r["model_on_grid"] for r in grid),
        "grid_kept_real": sum(r["real_on_grid"] for r in grid),
        "key_seeds": len(keyed),
        "key_kept": sum(bool(r["model_keeps_key"]) for r in keyed),
        "key_kept_real": sum(bool(r["real_keeps_key"]) for r in keyed),
        **{f"brought_back_{side}": sum(bool(r.get(f"{side}_brings_back")) for r in rows) for side in SIDES},
    }


def continue_seeds(
    composer, cuts: Sequence[Cut], rng_seed: int = RNG_SEED, compose: Callable | None = None
) -> list[list[Event]]:
    """Each seed continued at the defaults for as many onsets as its real next part, on the seed's clock.

    A seed goes through the same path as a user's file (written as MIDI, read by the bounded reader) and
    the continuation keeps its first N onsets: the closing cadence the composer may add is not the part
    being compared. `compose` (default: the composer's, one batch) turns the jobs into compositions.
    """
    from bot.music.midi_out import midi_bytes
    from bot.options import Options

    jobs = []
    for i, c in enumerate(cuts):
        seed = composer.seed(midi_bytes(c.seed, tempo=c.tempo), c.name)
        jobs.append((Options(length=len(onsets(c.real)), rng_seed=rng_seed + i, include_seed=True), seed))
    out = []
    for c, done in zip(cuts, (compose or composer.compose)(jobs)):
        seed_part, new = done.events[: done.seed_events], done.events[done.seed_events :]
        # The reader may time the seed from another origin; put the continuation on the cut's clock.
        shift = min(e.onset for e in c.seed) - min((e.onset for e in seed_part), default=0.0)
        keep = set(onsets(new)[: len(onsets(c.real))])
        out.append(
            [
                Event(e.onset + shift, e.duration, e.pitches)
                for e in new
                if round(e.onset * analysis.TICKS) / analysis.TICKS in keep
            ]
        )
    return out


def fidelity_section(
    composer,
    pieces: Sequence[Piece],
    chorales: Sequence[Piece],
    rng_seed: int = RNG_SEED,
    compose: Callable | None = None,
) -> dict:
    """Cut, continue and score every piece; one summary per group (piano, trained styles)."""
    t0 = time.monotonic()
    cuts = [c for p in pieces if (c := cut(p)) is not None]
    continuations = continue_seeds(composer, cuts, rng_seed, compose)
    rows = [
        score_seed(c, cont, chorale_excerpt(chorales, i, c.beats, skip=c.name))
        for i, (c, cont) in enumerate(zip(cuts, continuations))
    ]
    groups = {}
    for name, styles in GROUPS.items():
        chosen = [r for r in rows if r["style"] in styles]
        if chosen:
            groups[name] = summarize(chosen)
    return {
        "groups": groups,
        "seeds": rows,
        "skipped": [p.name for p in pieces if cut(p) is None],
        "rng_seeds": [rng_seed, rng_seed + max(len(cuts) - 1, 0)],
        "seed_beats": SEED_BEATS,
        "seconds": round(time.monotonic() - t0, 1),
    }


def _cell(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _count_lines(g: dict) -> list[str]:
    """The group's counts: a seed's tune brought back (a section from before it has none), grid, key."""
    lines = []
    if "brought_back_model" in g:
        lines.append(
            f"motifs: in {g['brought_back_model']} of {g['seeds']} continuations a passage of 8 notes of the "
            f"seed's tune comes back (the real next parts: {g['brought_back_real']}; the chorale excerpts: "
            f"{g['brought_back_chorale']})"
        )
    if not g["grid_seeds"]:
        lines.append(
            f"grid: no seed keeps to an eighth-note grid (at least {GRID_SHARE:.0%} of onsets on beats or half-beats)"
        )
    else:
        lines.append(
            f"grid: {g['grid_kept']} of {g['grid_seeds']} seeds on an eighth-note grid (at least "
            f"{GRID_SHARE:.0%} of onsets on beats or half-beats) are continued on it (the real next parts: "
            f"{g['grid_kept_real']})"
        )
    lines.append(
        f"key: {g['key_kept']} of {g['key_seeds']} continuations stay within a fifth of the seed's key "
        f"(the real next parts: {g['key_kept_real']})"
    )
    return lines


def fidelity_table(section: dict) -> str:
    """`etude eval --fidelity`'s printout: per group, the three distances and the fidelity per feature."""
    w = max(len(label) for _, label in FEATURES)
    lines = [
        f"seed fidelity: {len(section['seeds'])} seeds of up to {section['seed_beats']} beats (halves of "
        f"shorter pieces), continued at the defaults (rng seeds {section['rng_seeds'][0]}-"
        f"{section['rng_seeds'][1]}); distance to the seed, mean over seeds",
    ]
    for name, g in section["groups"].items():
        lines += [
            "",
            f"{name} ({g['seeds']} seeds)",
            f"{'':{w}} {'real next':>9} {'model':>7} {'chorale':>7} {'fidelity':>8}",
        ]
        for key, label in FEATURES:
            r = g["features"][key]
            lines.append(
                f"{label:{w}} {_cell(r['real']):>9} {_cell(r['model']):>7} {_cell(r['chorale']):>7} "
                f"{_cell(r['fidelity']):>8}"
            )
        lines.append(
            f"mean fidelity: {_cell(g['mean_fidelity'])} (1: as close as the real next part, 0: as a chorale; "
            "— where the chorale is not half as far again as the real next part)"
        )
        lines += _count_lines(g)
    if section.get("skipped"):
        lines.append(f"too short to cut: {', '.join(section['skipped'])}")
    return "\n".join(lines)


def card_markdown(section: dict) -> list[str]:
    """The model card's seed-fidelity section."""
    lines = [
        "## Seed fidelity (held-out pieces continued)",
        "",
        f"{len(section['seeds'])} pieces outside every training set (validation chorales, held-out "
        "renaissance and classical pieces, piano music, songs; `bot/eval/heldout.py` lists each with its terms) "
        f"cut into a seed of up to {section['seed_beats']} beats and its real next part, the seed continued "
        "at the defaults for as many onsets. Distance to the seed, mean over seeds; fidelity = "
        "(d(chorale) - d(model)) / (d(chorale) - d(real next)): 1 as close as the real continuation, 0 no "
        "closer than a Bach chorale excerpt (`bot/eval/fidelity.py`).",
        "",
    ]
    for name, g in section["groups"].items():
        lines += [
            f"**{name}** ({g['seeds']} seeds): mean fidelity {_cell(g['mean_fidelity'])}",
            "",
            "| distance to the seed | real next | this model | a chorale | fidelity |",
            "| --- | --- | --- | --- | --- |",
        ]
        for key, label in FEATURES:
            r = g["features"][key]
            lines.append(
                f"| {label} | {_cell(r['real'])} | {_cell(r['model'])} | {_cell(r['chorale'])} | "
                f"{_cell(r['fidelity'])} |"
            )
        lines += ["", *(line[0].upper() + line[1:] + "." for line in _count_lines(g)), ""]
    return lines


register_section("fidelity", card_markdown)
