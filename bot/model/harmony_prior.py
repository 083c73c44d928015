"""A prior on the lower voices under a melody, learned from the training chorales: which pitch class Bach
puts in the bass under each soprano note, given the melody around it and the bass before; and which in the
tenor and alto, given the soprano and the bass.

The network lists a chord's pitches lowest first, so it chooses the bass before it reads the melody note
above it (see `bot.model.harmonize`). This prior reads the whole melody, and the harmonizer multiplies it
into the network's distribution of each lower voice (a product of experts) while it samples.

The bass part is a log-linear model (multinomial logistic regression) over the twelve pitch classes, in C
major or A minor, whose features are conjunctions of the mode with: the soprano's pitch class; that with the
one after, the one before, both, or the two after or the two before; with the bass under the note before;
with where the note falls in the melody's bar (`strength`: downbeat, other beat, between beats, by the
melody's meter, a pickup included), its length and whether it is one of the last two. It is fitted with an
L2 penalty. The inner voices are counted: P(tenor | mode, soprano, bass) and P(alto | mode, soprano, bass,
tenor), each backed off to fewer conditions.

Both are learned from the training side of the chorales' split only (`bot.music.corpus.is_validation`), at
the onsets of the soprano's notes, moved to C major or A minor by the key of the soprano alone, as a user's
melody is, with the meter of the chorale's score (as a melody file with a time signature has it); a
chorale without one gets the meter its soprano's onsets suggest, as a melody without one does. They are
stored as `harmony_prior.npz` beside this module, which `python -m bot.model.harmony_prior` rebuilds (and
then prints the bass's log-loss on the validation chorales). They do not depend on the network, so any
chorale model harmonizes with them.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.music.corpus import Chorale, chorale_parts
from bot.music.events import Event, transpose
from bot.music.keys import Key, melody_key
from bot.music.melody import BadMelody, Melody, melody_from_events
from bot.music.meter import Meter

log = logging.getLogger(__name__)

PATH = Path(__file__).with_name("harmony_prior.npz")
NONE = 12  # the pitch class of a soprano note or bass that is not there (before the first, after the last)
L2 = 2.0  # the penalty measured best on the validation chorales' beats (of 0.5, 1, 2, 3, 5)
STEPS = 400  # full-batch Adam steps; the loss has flattened well before
ALPHA = 2.0  # how much the inner voices' counts lean on the counts with one condition fewer


def beat(meter: Meter) -> float:
    """Quarters per beat of `meter`, as the prior counts them: three eighths (or sixteenths) in a compound
    meter (6/8, 9/8, 12/8, 6/16), else the denominator's note but never longer than a quarter. A 3/2 or 2/2
    melody is counted in quarters, as the chorales move and as the prior learned its beats."""
    if meter.denominator >= 8 and meter.numerator % 3 == 0 and meter.numerator > 3:
        return 12 / meter.denominator
    return min(1.0, 4 / meter.denominator)


def strength(onset: float, meter: Meter) -> int:
    """0 on a downbeat of `meter` (in the melody's times, so a pickup is not a downbeat), 1 on another
    beat (`beat`), 2 between beats."""
    t = meter.in_bar(onset)
    if t < 1e-6 or meter.bar - t < 1e-6:
        return 0
    k = t / beat(meter)
    return 1 if abs(k - round(k)) < 1e-6 else 2


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Each row of logits `z` as log-probabilities."""
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def length_class(duration: float) -> int:
    return 0 if duration < 1 - 1e-6 else 1 if duration < 1 + 1e-6 else 2


def melody_features(notes: Sequence[Event], minor: bool, meter: Meter) -> list[list[str]]:
    """For each melody note (single pitches in C major or A minor, in `meter`), its features that do not
    hang on the bass before; `features` adds those that do."""
    pcs = [int(n.pitches[0]) % 12 for n in notes]
    n, m = len(notes), "m" if minor else "M"

    def at(j: int) -> int:
        return pcs[j] if 0 <= j < n else NONE

    out = []
    for i, note in enumerate(notes):
        s, p1, p2, n1, n2 = at(i), at(i - 1), at(i - 2), at(i + 1), at(i + 2)
        end = 0 if i == n - 1 else 1 if i == n - 2 else 2
        out.append(
            [
                f"{m}s{s}",
                f"{m}s{s}n{n1}",
                f"{m}s{s}p{p1}",
                f"{m}p{p1}s{s}n{n1}",
                f"{m}s{s}n{n1}n{n2}",
                f"{m}p{p2}p{p1}s{s}",
                f"{m}s{s}t{strength(note.onset, meter)}",
                f"{m}s{s}d{length_class(note.duration)}",
                f"{m}s{s}e{end}",
            ]
        )
    return out


def features(
    melody: list[str], note: Event, bass_before: int, soprano: int, before: int, after: int, meter: Meter
) -> list[str]:
    """A note's features: `melody` (its own from `melody_features`) and those of the bass before."""
    m, b = melody[0][0], bass_before
    return melody + [
        f"{m}b{b}",
        f"{m}s{soprano}b{b}",
        f"{m}s{soprano}b{b}n{after}",
        f"{m}s{soprano}b{b}p{before}",
        f"{m}p{before}s{soprano}b{b}n{after}",
        f"{m}s{soprano}b{b}d{length_class(note.duration)}",
        f"{m}b{b}t{strength(note.onset, meter)}",
    ]


@dataclass
class HarmonyPrior:
    """The bass's weights (F, 12) of the features `names` (a pitch class's logit is the sum of its
    features' rows) and the inner voices' table `inner` (2, 12, 12, 13, 12): log P(pitch class | mode,
    soprano, bass, tenor) of the alto, and of the tenor where the tenor is 12."""

    names: np.ndarray  # (F,) str
    weights: np.ndarray  # (F, 12) float32
    inner: np.ndarray  # (2, 12, 12, 13, 12) float32
    pieces: np.ndarray  # (P,) str: the chorales it was learned from, so the split can be checked

    def __post_init__(self) -> None:
        self.index = {str(k): i for i, k in enumerate(self.names)}

    @classmethod
    def load(cls, path: Path = PATH) -> HarmonyPrior:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["names"], f["weights"], f["inner"], f["pieces"])

    def save(self, path: Path = PATH) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(
                f,
                names=self.names,
                weights=self.weights.astype(np.float32),
                inner=self.inner.astype(np.float32),
                pieces=self.pieces,
            )

    def logits(self, feats: Sequence[str]) -> np.ndarray:
        rows = [self.index[f] for f in feats if f in self.index]
        return self.weights[rows].sum(axis=0) if rows else np.zeros(12, np.float32)

    def bass(self, notes: Sequence[Event], minor: bool, meter: Meter) -> np.ndarray:
        """(n, 13, 12): log P(bass pitch class | melody, bass before) for each note of a melody in C major
        or A minor whose bars are `meter`'s, for each pitch class of the bass before (12: none, before the
        first note)."""
        mel = melody_features(notes, minor, meter)
        pcs = [int(n.pitches[0]) % 12 for n in notes]
        out = np.zeros((len(notes), NONE + 1, 12))
        for i, note in enumerate(notes):
            before = pcs[i - 1] if i else NONE
            after = pcs[i + 1] if i + 1 < len(notes) else NONE
            z = np.stack(
                [
                    self.logits(features(mel[i], note, b, pcs[i], before, after, meter))
                    for b in range(NONE + 1)
                ]
            ).astype(np.float64)
            out[i] = log_softmax(z)
        return out

    def tables(self, notes: Sequence[Event], minor: bool, meter: Meter) -> tuple[np.ndarray, np.ndarray]:
        """The bass's table (`bass`) and the inner voices' under each note: (n, 12, 13, 12), by the bass's
        and the tenor's pitch classes (tenor 12: the tenor's own)."""
        pcs = np.array([int(n.pitches[0]) % 12 for n in notes])
        return self.bass(notes, minor, meter), self.inner[int(minor), pcs].astype(np.float64)

    def best_line(self, notes: Sequence[Event], minor: bool, meter: Meter) -> list[int]:
        """The most likely bass pitch classes under a melody by the prior alone (Viterbi over the bass before)."""
        table = self.bass(notes, minor, meter)
        best, back = table[0, NONE], []
        for i in range(1, len(notes)):
            total = best[:, None] + table[i, :NONE]  # (bass before, bass)
            back.append(total.argmax(axis=0))
            best = total.max(axis=0)
        line = [int(best.argmax())]
        for b in reversed(back):
            line.append(int(b[line[-1]]))
        return line[::-1]


_prior: HarmonyPrior | None = None


def shipped() -> HarmonyPrior | None:
    """The prior stored beside this module, read once; None (the network alone) when the file is missing."""
    global _prior
    if _prior is None and PATH.exists():
        _prior = HarmonyPrior.load()
    return _prior


# -- learning it ----------------------------------------------------------------------------------------
def _sounding(line: Sequence[Event]) -> Callable[[float], int | None]:
    """A function of time: the pitch class `line` (single pitch classes) sounds then, or None."""

    def at(t: float) -> int | None:
        for e in line:
            if e.onset <= t + 1e-6 < e.onset + e.duration:
                return int(e.pitches[0])
        return None

    return at


def chorale_soprano(
    name: str, parts: Sequence[Sequence[Event]], meter: Meter | None = None
) -> tuple[Melody, list[list[Event]], Key]:
    """A chorale's soprano read as a user's melody is (`melody_from_events`, with the score's `meter` as a
    file's time signature, else estimated), Bach's four parts on that melody's clock (where its meter is
    too), and the melody's key."""
    melody = melody_from_events(parts[0], name, meter=meter)
    shift = melody.meta["quarters_dropped"]
    bach = [[Event(e.onset - shift, e.duration, e.pitches) for e in part] for part in parts]
    return melody, bach, melody_key(melody.notes)


def _voices(
    chorales: Sequence[Chorale],
) -> Iterator[tuple[list[Event], bool, Meter, list[Callable[[float], int | None]]]]:
    """For each of `chorales`: its soprano as `melody_from_events` reads a user's melody, moved to C major
    or A minor by the soprano's own key; whether minor; its meter on the melody's clock; and the pitch
    class the alto, tenor and bass sound at a time of that melody, moved the same."""

    for name, parts, meter in chorales:
        try:
            melody, bach, key = chorale_soprano(name, parts, meter)
        except BadMelody:
            continue
        move = key.to_reference()
        lines = [
            _sounding([Event(e.onset, e.duration, ((max(e.pitches) + move) % 12,)) for e in part])
            for part in bach[1:]
        ]
        yield transpose(melody.notes, move), key.mode == "minor", melody.meter, lines


def examples(chorales: Sequence[Chorale]) -> tuple[list[list[str]], list[int]]:
    """(features, bass pitch class) of every soprano note of `chorales`. A note is counted once for each
    whole quarter it covers, with the bass Bach sounds on it (the beats the harmony figures compare), and
    once with the bass at its onset when it covers none."""
    xs, ys = [], []
    for notes, minor, meter, (_, _, bass_at) in _voices(chorales):
        mel = melody_features(notes, minor, meter)
        pcs = [int(n.pitches[0]) % 12 for n in notes]
        for i, note in enumerate(notes):
            before = bass_at(notes[i - 1].onset) if i else NONE
            if before is None:
                continue
            beats = np.arange(np.ceil(note.onset - 1e-6), note.onset + note.duration - 1e-6, 1.0)
            targets = [b for b in map(bass_at, [*beats] or [note.onset]) if b is not None]
            after = pcs[i + 1] if i + 1 < len(notes) else NONE
            feats = features(mel[i], note, before, pcs[i], pcs[i - 1] if i else NONE, after, meter)
            xs += [feats] * len(targets)
            ys += targets
    return xs, ys


def fit(
    xs: list[list[str]], ys: list[int], l2: float = L2, steps: int = STEPS
) -> tuple[np.ndarray, np.ndarray]:
    """The bass's feature names and the weights that maximize the log-likelihood of `ys` less `l2`/2 times
    their squares (full-batch Adam from zero: deterministic)."""
    names = sorted({f for x in xs for f in x})
    index = {f: i for i, f in enumerate(names)}
    width = max(len(x) for x in xs)
    rows = np.full((len(xs), width), len(names))  # a padding row of zeros for shorter lists
    for r, x in enumerate(xs):
        rows[r, : len(x)] = [index[f] for f in x]
    y = np.asarray(ys)
    w = np.zeros((len(names) + 1, 12))
    m, v = np.zeros_like(w), np.zeros_like(w)
    lr, b1, b2 = 0.05, 0.9, 0.999
    for t in range(1, steps + 1):
        z = w[rows].sum(axis=1)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        g = np.zeros_like(w)
        np.add.at(g, rows, p[:, None, :])
        g += l2 * w
        g[-1] = 0
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    return np.array(names), w[:-1].astype(np.float32)


def inner_table(chorales: Sequence[Chorale], alpha: float = ALPHA) -> np.ndarray:
    """(2, 12, 12, 13, 12): log P(pitch class | mode, soprano, bass, tenor) of the alto, and at tenor 12
    of the tenor, counted at the onsets of the soprano's notes of `chorales`; each count leans on the one
    with a condition fewer by `alpha` notes' worth, down to P(· | mode, soprano) with one added to each."""
    c = np.zeros((2, 12, 12, NONE + 1, 12))
    for notes, minor, _, lines in _voices(chorales):
        for note in notes:
            a, t, b = (at(note.onset) for at in lines)
            if a is None or t is None or b is None:
                continue
            s = int(note.pitches[0]) % 12
            c[int(minor), s, b, NONE, t] += 1
            c[int(minor), s, b, t, a] += 1

    def lean(counts: np.ndarray, fewer: np.ndarray) -> np.ndarray:
        return (counts + alpha * fewer) / (counts.sum(-1, keepdims=True) + alpha)

    out = np.zeros_like(c)
    tenor = c[:, :, :, NONE]  # (mode, soprano, bass, tenor)
    by_soprano = tenor.sum(axis=2)
    out[:, :, :, NONE] = np.log(
        lean(tenor, ((by_soprano + 1) / (by_soprano.sum(-1, keepdims=True) + 12))[:, :, None])
    )
    alto = c[:, :, :, :NONE]  # (mode, soprano, bass, tenor, alto)
    alto_sb, alto_s = alto.sum(axis=3), alto.sum(axis=(2, 3))
    p_s = (alto_s + 1) / (alto_s.sum(-1, keepdims=True) + 12)
    out[:, :, :, :NONE] = np.log(lean(alto, lean(alto_sb, p_s[:, :, None])[:, :, :, None]))
    return out


def build(path: Path = PATH, limit: int | None = None) -> HarmonyPrior:
    """Learn the prior from the training chorales (the first `limit` of them) and store it."""

    t0 = time.monotonic()
    # One of each: the corpus holds some chorales twice (as two files with the same name).
    chorales = list({c.name: c for c in chorale_parts(validation=False, limit=limit)}.values())
    xs, ys = examples(chorales)
    names, weights = fit(xs, ys)
    prior = HarmonyPrior(names, weights, inner_table(chorales), np.array(sorted(c.name for c in chorales)))
    prior.save(path)
    log.info("harmony prior: %d features, %d examples, %.0f s", len(names), len(ys), time.monotonic() - t0)
    return HarmonyPrior.load(path)  # as it is stored: in single precision


def log_loss(prior: HarmonyPrior, chorales: Sequence[Chorale]) -> tuple[float, float, int]:
    """The bass's mean log-loss (nats) on `chorales`' examples (`examples`: Bach's bass on each beat), the
    share of them where Bach's is the likeliest, and how many there are."""
    xs, ys = examples(chorales)
    logp = log_softmax(np.stack([prior.logits(x) for x in xs]).astype(np.float64))
    y = np.asarray(ys)
    return float(-logp[np.arange(len(y)), y].mean()), float((logp.argmax(axis=1) == y).mean()), len(y)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="learn the harmony prior from the training chorales and store it"
    )
    parser.add_argument("--out", type=Path, default=PATH, help=f"where to store it (default: {PATH})")
    args = parser.parse_args(argv)
    prior = build(args.out)
    print(f"saved {args.out}: {len(prior.names)} bass features and the inner voices' table")
    loss, top, n = log_loss(prior, chorale_parts(validation=True))
    print(f"validation chorales: bass log-loss {loss:.4f} nats", end=", ")
    print(f"Bach's bass the likeliest in {100 * top:.1f}% of {n} examples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
