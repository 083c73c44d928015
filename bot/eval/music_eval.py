"""The musical part of `etude eval`: what the model's samples sound like beside the validation pieces.

A fixed set of pieces (fixed RNG seeds) is sampled through the public `Composer` and their musical
statistics (`bot.music.stats`) are set beside the validation pieces'; the sweep does the same for a grid
of temperature and top-p; key fidelity continues seeds cut from real pieces and checks that the
continuation keeps the seed's key. With `write_card` each result goes into the model's card.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from bot.eval.evaluate import validation_source
from bot.model import network as M
from bot.model.card import store_section as _store_in_card
from bot.model.styles import default_style
from bot.music import stats as S
from bot.music.corpus import load_pieces, split_by_piece
from bot.music.keys import estimate_key, fifths_distance
from bot.options import Options, style_temperature

# Piece i of a run is sampled with RNG seed MUSIC_RNG_SEED + i, so every run hears the same pieces.
MUSIC_RNG_SEED = 1000
MUSIC_PIECES, MUSIC_LENGTH = 24, 500
QUICK_PIECES, QUICK_LENGTH = 8, 200
SWEEP_TEMPERATURES = (0.7, 0.85, 1.0)
SWEEP_TOP_PS = (0.9, 0.95, 1.0)
KEY_SEEDS_QUICK = 16  # pieces whose first parts seed the key-fidelity measurement with --quick
KEY_SEED_ONSETS = 96  # a seed is at most this many onsets of a piece, at most half of it


def _music_data(m, data: str | None) -> tuple[list, list]:
    source = data or validation_source(m.card)
    return split_by_piece(load_pieces(source))


def reference_music(train_p: Sequence, val_p: Sequence) -> tuple[dict, np.ndarray]:
    """The validation pieces' statistics, and the training pieces' duration histogram to measure against."""
    ref_durations = S.pooled_duration_histogram([p.events for p in train_p])
    per = [S.piece_statistics(p.events, ref_durations) for p in val_p]
    return S.summarize(per), ref_durations


def sample_music(composer, settings: Sequence[tuple[float, float]], pieces: int, length: int) -> list[list]:
    """`pieces` unseeded pieces of `length` notes for each (temperature, top-p), in one batched call."""
    jobs = [
        (Options(length=length, temperature=t, top_p=p, rng_seed=MUSIC_RNG_SEED + i), None)
        for t, p in settings
        for i in range(pieces)
    ]
    done = composer.compose(jobs)
    return [[c.events for c in done[k * pieces : (k + 1) * pieces]] for k in range(len(settings))]


def music_section(
    composer,
    train_p: Sequence,
    val_p: Sequence,
    pieces: int = MUSIC_PIECES,
    length: int = MUSIC_LENGTH,
    temperature: float | None = None,
    top_p: float | None = None,
) -> dict:
    """The musical statistics of pieces sampled at one setting (the defaults unless given), beside the
    validation pieces' (whole pieces: each is shorter than a sample)."""
    t0 = time.monotonic()
    defaults = Options()
    temperature = style_temperature(default_style(composer.model)) if temperature is None else temperature
    top_p = defaults.top_p if top_p is None else top_p
    reference, ref_durations = reference_music(train_p, val_p)
    (samples,) = sample_music(composer, [(temperature, top_p)], pieces, length)
    generated = S.summarize([S.piece_statistics(ev, ref_durations) for ev in samples])
    return {
        "temperature": temperature,
        "top_p": top_p,
        "pieces": pieces,
        "length": length,
        "rng_seeds": [MUSIC_RNG_SEED, MUSIC_RNG_SEED + pieces - 1],
        "reference_pieces": len(val_p),
        "generated": generated,
        "reference": reference,
        "distance": S.distance(generated, reference),
        "seconds": round(time.monotonic() - t0, 1),
    }


def music_sweep(
    composer,
    train_p: Sequence,
    val_p: Sequence,
    temperatures: Sequence[float] = SWEEP_TEMPERATURES,
    top_ps: Sequence[float] = SWEEP_TOP_PS,
    pieces: int = MUSIC_PIECES,
    length: int = MUSIC_LENGTH,
) -> dict:
    """The statistics for every temperature x top-p, each with its distance to the validation pieces
    (`stats.distance`: 0 when every median sits on the chorales'), best first."""
    t0 = time.monotonic()
    reference, ref_durations = reference_music(train_p, val_p)
    settings = [(t, p) for t in temperatures for p in top_ps]
    samples = sample_music(composer, settings, pieces, length)
    rows = []
    for (t, p), group in zip(settings, samples):
        generated = S.summarize([S.piece_statistics(ev, ref_durations) for ev in group])
        rows.append(
            {
                "temperature": t,
                "top_p": p,
                "distance": S.distance(generated, reference),
                "generated": generated,
            }
        )
    rows.sort(key=lambda r: r["distance"])
    return {
        "pieces": pieces,
        "length": length,
        "reference": reference,
        "reference_pieces": len(val_p),
        "settings": rows,
        "seconds": round(time.monotonic() - t0, 1),
    }


def key_fidelity(composer, pieces: Sequence, length: int = 200, seeds: int | None = None) -> dict:
    """Share of seeds whose continuation stays within one fifth of the seed's key.

    Each piece is cut at its middle onset (or after its first `KEY_SEED_ONSETS` onsets, whichever comes
    first); the part before, written as a MIDI file and read back like any user's seed, is continued for
    `length` notes at the defaults. The seed's key and the continuation's are estimated apart
    (Krumhansl-Schmuckler) and compared on the circle of fifths: within one step (the same key, its
    relative, or a key a fifth either side) the continuation stayed. The piece's own next part, measured
    the same way, is the reference.
    """
    from bot.music.midi_out import midi_bytes

    t0 = time.monotonic()
    chosen = sorted(pieces, key=lambda p: p.name)[: seeds or len(pieces)]
    jobs, keys, own, skipped = [], [], [], 0
    for i, p in enumerate(chosen):
        onsets = sorted({e.onset for e in p.events})
        if len(onsets) < 8:
            skipped += 1
            continue
        half = min(len(onsets) // 2, KEY_SEED_ONSETS)
        cut, stop = onsets[half], onsets[min(2 * half, len(onsets) - 1)]
        first = [e for e in p.events if e.onset < cut]
        after = [e for e in p.events if cut <= e.onset <= stop]
        key = estimate_key(first)
        if key is None:
            skipped += 1  # a seed without a key (one repeated pitch) says nothing here
            continue
        seed = composer.seed(midi_bytes(first, tempo=p.tempo), p.name)
        jobs.append((Options(length=length, rng_seed=MUSIC_RNG_SEED + i), seed))
        keys.append(key)
        own_key = estimate_key(after)
        own.append(own_key is not None and fifths_distance(key, own_key) <= 1)
    done = composer.compose(jobs) if jobs else []
    stays = []
    for key, c in zip(keys, done):
        k = estimate_key(c.events)
        stays.append(k is not None and fifths_distance(key, k) <= 1)
    return {
        "seeds": len(jobs),
        "skipped": skipped,
        "length": length,
        "share_within_one_fifth": round(float(np.mean(stays)), 4) if stays else None,
        "own_continuation": round(float(np.mean(own)), 4) if own else None,
        "seconds": round(time.monotonic() - t0, 1),
    }


def evaluate_music(
    model_dir: str | None = None,
    data: str | None = None,
    quick: bool = False,
    sweep: bool = False,
    write_card: bool = False,
    key_seeds: str | None = None,
) -> dict:
    """The musical section of `etude eval` (or, with `sweep`, the temperature x top-p sweep alone).

    Seed key fidelity is measured on the validation pieces and, with `key_seeds`, on the pieces of
    another data source (a folder of MIDI files, `corpus:<composer>`): music the model did not learn.
    """
    from bot.model.composer import Composer

    m = M.load(model_dir)
    train_p, val_p = _music_data(m, data)
    other = load_pieces(key_seeds) if key_seeds and not sweep else None  # a bad source fails before sampling
    composer = Composer(m)
    pieces, length = (QUICK_PIECES, QUICK_LENGTH) if quick else (MUSIC_PIECES, MUSIC_LENGTH)
    if sweep:
        result = {
            "model": m.name,
            "sweep": music_sweep(composer, train_p, val_p, pieces=pieces, length=length),
        }
        if write_card:
            _store_in_card(m.path, "sweep", {**result["sweep"], "table": sweep_table(result["sweep"])})
        return result
    n_seeds = KEY_SEEDS_QUICK if quick else None
    fidelity = {"validation pieces": key_fidelity(composer, val_p, length=length // 2, seeds=n_seeds)}
    if other is not None:
        fidelity[key_seeds] = key_fidelity(composer, other, length=length // 2, seeds=n_seeds)
    result = {
        "model": m.name,
        "music": music_section(composer, train_p, val_p, pieces, length),
        "key_fidelity": fidelity,
    }
    if write_card:
        _store_in_card(m.path, "music", {**result["music"], "key_fidelity": result["key_fidelity"]})
    return result


def _inside(stat: S.Statistic, generated: dict, reference: dict) -> str:
    """Whether the generated median lies inside the reference's 5th-95th percentile."""
    if stat.share or not generated.get("n") or not reference.get("n"):
        return ""
    return "yes" if reference["p5"] <= generated["median"] <= reference["p95"] else "no"


def music_table(music: dict, fidelity: dict | None = None) -> str:
    w = max(len(s.label) for s in S.STATISTICS)
    lines = [
        f"music: {music['pieces']} pieces of {music['length']} notes at temperature {music['temperature']:g}, "
        f"top-p {music['top_p']:g} (rng seeds {music['rng_seeds'][0]}-{music['rng_seeds'][1]}), beside "
        f"{music['reference_pieces']} validation pieces",
        f"{'':{w}} {'validation: median [5th, 95th]':>31} {'model':>8} {'inside':>6}",
    ]
    for s in S.STATISTICS:
        g, r = music["generated"][s.key], music["reference"][s.key]
        lines.append(f"{s.label:{w}} {S.fmt(s, r, True):>31} {S.fmt(s, g, False):>8} {_inside(s, g, r):>6}")
    lines.append(f"distance to the validation pieces: {music['distance']:.3f} (0: every median on theirs)")
    lines += [S.key_fidelity_line(source, k) for source, k in (fidelity or {}).items()]
    return "\n".join(lines)


SWEEP_COLUMNS = {  # the statistics a sweep's table shows (its JSON has them all), with short headings
    "pitch_class_entropy": "entropy",
    "scale_consistency": "in scale",
    "key_changes_per_16_beats": "key chg",
    "parallels_per_change": "parallels",
    "soprano_steps": "sop steps",
    "cadences_per_16_beats": "cadences",
    "ends_with_cadence": "ends",
}


def sweep_table(sweep: dict) -> str:
    shown = [s for s in S.STATISTICS if s.key in SWEEP_COLUMNS]
    ref = sweep["reference"]
    lines = [
        f"sweep: {sweep['pieces']} pieces of {sweep['length']} notes per setting, best first "
        f"({sweep['seconds']:.0f} s); distance: mean gap of a statistic in validation 5th-95th ranges",
        f"{'temp':>5} {'top-p':>5} {'distance':>8} " + " ".join(f"{SWEEP_COLUMNS[s.key]:>9}" for s in shown),
        f"{'validation':>20} " + " ".join(f"{S.fmt(s, ref[s.key], False):>9}" for s in shown),
    ]
    for row in sweep["settings"]:
        g = row["generated"]
        lines.append(
            f"{row['temperature']:>5g} {row['top_p']:>5g} {row['distance']:>8.3f} "
            + " ".join(f"{S.fmt(s, g[s.key], False):>9}" for s in shown)
        )
    return "\n".join(lines)
