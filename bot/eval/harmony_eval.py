"""`etude eval --harmony`: harmonize the soprano lines of the validation chorales and judge the harmony.

Each validation chorale's soprano goes through the same path a user's melody does (`melody_from_events`,
with the score's time signature as a melody file's, then the constrained sampler), and the result is scored
with `bot.music.harmony` against Bach's own four parts: bass pitch class on the beats, consecutive fifths
and octaves, crossings, triads and sevenths. Bach's harmonizations are scored the same way, and so is the
n-gram baseline sampled under the same constraints (and the same harmony prior). Beside them: the network
without the harmony prior, and the prior's own most likely bass line without the network (only the bass is
scored: it writes no other voice).
"""

from __future__ import annotations

import logging
import time

from bot.model.harmonize import INNER_WEIGHT, PRIOR_WEIGHT, harmonize_melody
from bot.model.harmony_prior import HarmonyPrior, chorale_soprano, shipped
from bot.model.steps import PARTICLES, NgramSteps, NumpySteps
from bot.music.corpus import Chorale, chorale_parts
from bot.music.events import Event, transpose
from bot.music.harmony import FourVoices, bass_on_beats, figures, total

log = logging.getLogger(__name__)

SHOWN = ("four_voices", "parallels_per_change", "crossings", "triads_or_sevenths", "bass_on_beats")


def harmonize_chorales(
    chorales: list[Chorale],
    make_steps,
    vocab,
    temperature: float = 1.0,
    rng_seed: int = 0,
    rules: bool = True,
    prior_weight: float = PRIOR_WEIGHT,
    inner_weight: float = INNER_WEIGHT,
) -> dict:
    """Figures, summed over `chorales`, of harmonizing each soprano with `make_steps(meter)` (the steps
    for a melody in that meter, as `/harmonize` makes them)."""
    results, seconds, notes = [], 0.0, 0
    for i, (name, parts, meter) in enumerate(chorales):
        melody, bach, key = chorale_soprano(name, parts, meter)
        t0 = time.perf_counter()
        events, _ = harmonize_melody(
            make_steps(melody.meter),
            vocab,
            melody.notes,
            key,
            temperature,
            rng_seed + i,
            rules,
            prior_weight,
            inner_weight,
            melody.meter,
        )
        seconds += time.perf_counter() - t0
        notes += len(melody.notes)
        results.append(figures(FourVoices.from_events(events, melody.notes), FourVoices.from_parts(bach)))
    return {**total(results), "seconds_per_100_notes": round(100 * seconds / max(notes, 1), 3)}


def prior_bass(chorales: list[Chorale], prior: HarmonyPrior) -> dict:
    """Bass on the beats, summed over `chorales`, of the prior's own most likely bass line under each
    soprano: what the prior knows without the network (it writes no other voice)."""
    equal = beats = 0
    for name, parts, meter in chorales:
        melody, bach, key = chorale_soprano(name, parts, meter)
        move = key.to_reference()
        line = prior.best_line(transpose(melody.notes, move), key.mode == "minor", melody.meter)
        # Any octave will do: the figure compares pitch classes.
        events = [
            Event(n.onset, n.duration, (36 + (b - move) % 12, *n.pitches)) for n, b in zip(melody.notes, line)
        ]
        e, b = bass_on_beats(FourVoices.from_events(events, melody.notes), FourVoices.from_parts(bach))
        equal, beats = equal + e, beats + b
    return {"bass_equal": equal, "beats": beats, "bass_on_beats": round(equal / max(beats, 1), 4)}


def evaluate_harmony(
    model_dir: str | None = None,
    limit: int | None = None,
    temperature: float = 1.0,
    ngram_order: int = 5,
    baseline: bool = True,
) -> dict:
    """The harmony table's rows: Bach, the model (with and without the voice-leading rule), the n-gram."""
    from bot.eval.evaluate import KneserNey
    from bot.model import network as M
    from bot.music.corpus import encode_pieces, load_pieces, split_by_piece

    t0 = time.monotonic()
    m = M.load(model_dir)
    chorales = chorale_parts(validation=True, limit=limit)
    bach = [figures(FourVoices.from_parts(c.parts), FourVoices.from_parts(c.parts)) for c in chorales]
    rows = {"bach": total(bach)}
    rows["model"] = harmonize_chorales(
        chorales, lambda meter: NumpySteps(m, meter=meter), m.vocab, temperature
    )
    rows["model, no rule"] = harmonize_chorales(
        chorales, lambda meter: NumpySteps(m, meter=meter), m.vocab, temperature, rules=False
    )
    prior = shipped()
    if prior is not None:
        rows["network alone"] = harmonize_chorales(
            chorales,
            lambda meter: NumpySteps(m, meter=meter),
            m.vocab,
            temperature,
            prior_weight=0,
            inner_weight=0,
        )
        rows["network alone"]["kind"] = "the network without the harmony prior"
        rows["prior alone"] = prior_bass(chorales, prior)
        rows["prior alone"]["kind"] = "the harmony prior's most likely bass line (no other voice)"
    if baseline:
        # The n-gram learns what the network learned: the training chorales in C major or A minor.
        train_p, _ = split_by_piece(load_pieces("chorales"))
        kn = KneserNey(encode_pieces(train_p, m.vocab), len(m.vocab), order=ngram_order)
        rows["ngram"] = harmonize_chorales(chorales, lambda meter: NgramSteps(kn), m.vocab, temperature)
        rows["ngram"]["kind"] = f"interpolated Kneser-Ney, order {ngram_order}, with the same harmony prior"
    return {
        "model": m.name,
        "chorales": len(chorales),
        "melody_notes": int(sum(len(c.parts[0]) for c in chorales)),
        "temperature": temperature,
        "particles": PARTICLES,
        "prior_weights": {"bass": PRIOR_WEIGHT, "inner": INNER_WEIGHT} if prior is not None else None,
        "rows": rows,
        "targets": {
            "parallels_at_most_twice_bach": bool(
                rows["model"]["parallels_per_change"] <= 2 * rows["bach"]["parallels_per_change"]
            ),
            "bass_on_beats_over_40_percent": bool(rows["model"]["bass_on_beats"] > 0.4),
        },
        "seconds": round(time.monotonic() - t0, 1),
    }


def harmony_table(result: dict) -> str:
    """The rows as a fixed-width table: shares in percent, parallels per 100 chord changes."""
    heads = {"parallels_per_change": "parallels/100 changes"}
    lines = [
        f"harmonizations of {result['chorales']} validation chorale sopranos ({result['melody_notes']} notes), "
        f"model {result['model']}, temperature {result['temperature']:g}, {result['particles']} particles, "
        + (
            f"harmony prior to the power {w['bass']:g} (bass) and {w['inner']:g} (tenor, alto)"
            if (w := result.get("prior_weights"))
            else "no harmony prior"
        ),
        f"{'':16}" + "".join(f"{heads.get(c, c.replace('_', ' ')):>22}" for c in SHOWN),
    ]
    for name, row in result["rows"].items():
        cells = []
        for c in SHOWN:
            if c not in row:
                cells.append(f"{'—':>22}")
            elif c == "parallels_per_change":
                cells.append(f"{100 * row[c]:>22.1f}")
            else:
                cells.append(f"{f'{100 * row[c]:.1f}%':>22}")
        lines.append(f"{name:16}" + "".join(cells))
    t = result["targets"]
    lines.append(
        f"targets: parallels at most twice Bach's {'met' if t['parallels_at_most_twice_bach'] else 'NOT met'}; "
        f"bass equal to Bach's on more than 40% of beats {'met' if t['bass_on_beats_over_40_percent'] else 'NOT met'}"
    )
    return "\n".join(lines)
