"""Can a listener tell the samples from real chorales? `etude eval --listener`.

Two measures on unseeded samples at the defaults beside the validation chorales:

- a discriminator: logistic regression (L2, Newton's method, classes weighted equally) on listener
  statistics (`excerpt_features`) of 32-beat excerpts, cross-validated by piece (group k-fold: every
  excerpt of a piece lands in the same fold), scored by balanced accuracy on the held-out folds, so 50%
  means it cannot tell them apart whatever the numbers of excerpts; with the features that tell most.
- phrases and form: cadences that close a phrase on a beat per 16 beats, and the share of pieces in which
  a passage of 8 onsets comes back within 64 beats (`bot.music.phrases`).

The printout and the card's section are rendered by `bot.eval.listener_card`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from bot.eval.fidelity import class_histogram, clip, on_grid_share, onsets
from bot.music import analysis
from bot.music import stats as S
from bot.music.events import Event
from bot.music.keys import MODES, Key, key_profile, pitch_class_weights
from bot.music.meter import Meter
from bot.music.phrases import passage_returns, phrase_cadences_per_16_beats, repeated_bars

EXCERPT_BEATS = 32
MAX_EXCERPTS = 4  # per piece, so that long samples do not outweigh short chorales
FOLDS = 5
SPREAD_ROUNDS = 200  # sets of pieces drawn again for the accuracy's spread
L2 = 1.0
TEXTURE_BEATS = 8.0
RNG_SEED = 5000  # sample i is drawn with RNG seed RNG_SEED + i
PIECES, LENGTH = 16, 500
QUICK_PIECES, QUICK_LENGTH = 6, 200
FOLK_LENGTH, QUICK_FOLK_LENGTH, QUICK_TUNES = 200, 100, 8  # a folk tune: about 110 notes, played twice


# -- listener statistics of one excerpt ---------------------------------------------------------------------
def _texture(ms: Sequence[analysis.Moment], start: float, end: float) -> tuple[float, float]:
    """Mean voices sounding per onset, and how much that mean varies between 8-beat windows (std / mean)."""
    per = []
    t = start
    while t < end - 1e-9:
        counts = [len(m.sounding) for m in ms if t <= m.time < t + TEXTURE_BEATS]
        if counts:
            per.append(np.mean(counts))
        t += TEXTURE_BEATS
    if not per:
        return 0.0, 0.0
    return float(np.mean(per)), float(np.std(per) / max(np.mean(per), 1e-9))


def _moves(line: Sequence[int]) -> list[int]:
    return [b - a for a, b in zip(line, line[1:]) if b != a]


def _share(values: Sequence[bool]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def excerpt_features(events: Sequence[Event], start: float = 0.0, beats: float = EXCERPT_BEATS) -> dict:
    """Listener statistics of an excerpt that runs `beats` from `start`: pitch, scale and key, voice
    leading, texture, rhythm, phrases (a value is None when the excerpt cannot show it)."""
    events = [e for e in events if e.pitches]
    ms = analysis.moments(events)
    pitches = [p for e in events for p in e.pitches]
    top = [m.sounding[-1] for m in ms if m.sounding]
    bass = [m.sounding[0] for m in ms if m.sounding]
    sop, low = _moves(top), _moves(bass)
    ts = np.array(onsets(events))
    whole = np.abs(ts - np.round(ts)) < 1e-3
    half = (np.abs(ts * 2 - np.round(ts * 2)) < 1e-3) & ~whole
    hist = pitch_class_weights(events)
    voices, variation = _texture(ms, start, start + beats)
    sounding = sum(max(0.0, min(e.onset + e.duration, start + beats) - e.onset) for e in events)
    silent = _silent_share(events, start, start + beats)
    out = {
        "pitch-class entropy": S.pitch_class_entropy(events),
        "share inside one scale": S.scale_consistency(events),
        "key changes per 16 beats": S.key_changes_per_16_beats(events),
        "key clarity": _key_clarity(hist),
        "parallels per chord change": S.parallel_perfects_per_change(ms),
        "chords spelt per onset": _share([analysis.chord_of(m.sounding) is not None for m in ms]),
        "soprano steps": S.soprano_steps(ms),
        "soprano leaps over a fifth": _share([abs(d) > 7 for d in sop]),
        "soprano mean move": float(np.mean(np.abs(sop))) if sop else None,
        "soprano repeated notes": _share([b == a for a, b in zip(top, top[1:])]),
        "soprano range": float(max(top) - min(top)) if top else None,
        "bass steps": _share([abs(d) <= 2 for d in low]),
        "bass range": float(max(bass) - min(bass)) if bass else None,
        "range (semitones)": float(max(pitches) - min(pitches)) if pitches else None,
        "mean pitch": float(np.mean(pitches)) if pitches else None,
        "notes per onset": S.notes_per_onset(ms),
        "voices sounding": voices,
        "texture variation per 8 beats": variation,
        "most voices at once": float(max((len(m.sounding) for m in ms), default=0)),
        "onsets per beat": len(ts) / beats,
        "onsets on the beat": _share(list(whole)),
        "onsets on the half-beat": _share(list(half)),
        "onsets on an eighth grid": on_grid_share(events) if len(ts) else None,
        "silence share": silent,
        "mean note length (log2 beats)": float(np.mean(np.log2([e.duration for e in events])))
        if events
        else None,
        "note beats per beat": sounding / beats,
        "phrase cadences per 16 beats": phrase_cadences_per_16_beats(events),
    }
    for c, v in zip(S.DURATION_CLASSES, S.duration_histogram(events)):
        out[f"durations of {c:.2g} beats"] = float(v)
    for c, v in zip(S.DURATION_CLASSES, class_histogram(np.diff(ts))):
        out[f"inter-onsets of {c:.2g} beats"] = float(v)
    return out


def _key_clarity(hist: np.ndarray) -> float | None:
    """The best correlation of the pitch-class weights with one of the 24 key profiles."""
    if hist.std() == 0:
        return None
    z = (hist - hist.mean()) / hist.std()
    candidates = [Key(t, mode) for t in range(12) for mode in MODES]
    return float(max(key_profile(k) @ z for k in candidates) / 12)


def _silent_share(events: Sequence[Event], start: float, end: float) -> float:
    """Share of [start, end) in which nothing sounds."""
    spans = sorted((max(e.onset, start), min(e.onset + e.duration, end)) for e in events)
    covered, reach = 0.0, start
    for a, b in spans:
        if b > reach:
            covered += b - max(a, reach)
            reach = b
    return 1 - covered / (end - start) if end > start else 0.0


def excerpts(events: Sequence[Event], beats: float = EXCERPT_BEATS, most: int = MAX_EXCERPTS) -> list:
    """Up to `most` successive excerpts of `beats` beats (whole ones only), timed from 0."""
    events = [e for e in events if e.pitches]
    if not events:
        return []
    start = float(np.floor(min(e.onset for e in events)))
    end = max(e.onset + e.duration for e in events)
    out = []
    while start + beats <= end + 1e-9 and len(out) < most:
        part = clip(events, start, start + beats, -start)
        if len(onsets(part)) >= 2:
            out.append(part)
        start += beats
    return out


# -- logistic regression, cross-validated by piece ----------------------------------------------------------
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = 25) -> np.ndarray:
    """Weights (bias last) of an L2-penalised logistic regression, each class weighted equally, by Newton's
    method. `x` should be standardised; the bias is not penalised."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    cw = np.where(y == 1, n / (2 * max(y.sum(), 1)), n / (2 * max(n - y.sum(), 1)))
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (cw * (p - y)) + reg * w
        hess = (xb * (cw * p * (1 - p))[:, None]).T @ xb + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Columns scaled by the training rows' mean and spread; a missing value becomes the mean (0)."""
    mean = np.nanmean(train, 0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    std = np.nanstd(train, 0)
    std = np.where(np.isnan(std) | (std < 1e-9), 1.0, std)
    return [np.nan_to_num((a - mean) / std) for a in (train, *others)]


def group_folds(groups: Sequence[str], y: np.ndarray, k: int = FOLDS, seed: int = 0) -> np.ndarray:
    """A fold per row: each group's rows share a fold, and each class's groups are dealt out evenly."""
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for label in (0, 1):
        names = sorted({g for g, t in zip(groups, y) if t == label})
        for i, g in enumerate(rng.permutation(names)):
            fold_of[str(g)] = i % k
    return np.array([fold_of[g] for g in groups])


def cross_validate(x: np.ndarray, y: np.ndarray, groups: Sequence[str], k: int = FOLDS) -> float:
    """Balanced accuracy of out-of-fold predictions: the mean of each class's share told right."""
    per_class = [len({g for g, t in zip(groups, y) if t == c}) for c in (0, 1)]
    k = max(2, min(k, *per_class))
    folds = group_folds(groups, y, k)
    pred = np.zeros(len(y))
    for f in range(k):
        test = folds == f
        if not test.any() or test.all():
            continue
        tr, te = _standardise(x[~test], x[test])
        w = fit_logistic(tr, y[~test])
        pred[test] = np.hstack([te, np.ones((len(te), 1))]) @ w > 0
    return float(np.mean([np.mean(pred[y == c] == c) for c in (0, 1)]))


def accuracy_spread(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], rounds: int = SPREAD_ROUNDS, seed: int = 0
) -> tuple[float, float]:
    """The 5th and 95th percentiles of the cross-validated accuracy over sets of pieces drawn again from
    each side's own (with replacement, a piece's excerpts together): how far the figure would move with
    other samples and other chorales of the same sources. A piece drawn twice stays one group, so its
    copies share a fold and never test each other."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    rows = {g: np.flatnonzero(groups == g) for g in set(groups.tolist())}
    sides = [sorted({g for g, t in zip(groups.tolist(), y) if t == c}) for c in (0, 1)]
    scores = []
    for _ in range(rounds):
        picked = [g for side in sides for g in rng.choice(side, len(side))]
        idx = np.concatenate([rows[g] for g in picked])
        scores.append(cross_validate(x[idx], y[idx], groups[idx].tolist()))
    low, high = np.percentile(scores, [5, 95])
    return float(low), float(high)


def discriminate(
    real: Sequence[Sequence[Event]],
    generated: Sequence[Sequence[Event]],
    features: Callable[[Sequence[Event]], dict] = excerpt_features,
    telling: int = 6,
) -> dict:
    """How well excerpts of `generated` pieces are told from excerpts of `real` ones (cross-validated by
    piece), and the statistics that tell them most (the largest standardised weights, fit on all)."""
    rows, y, groups = [], [], []
    for label, pieces in ((0, real), (1, generated)):
        for i, events in enumerate(pieces):
            for part in excerpts(events):
                rows.append(features(part))
                y.append(label)
                groups.append(f"{label}:{i}")
    if len(set(y)) < 2:
        raise ValueError("each side needs at least one excerpt of 32 beats")
    names = list(rows[0])
    x = np.array([[np.nan if r[n] is None else r[n] for n in names] for r in rows], float)
    y_arr = np.array(y)
    accuracy = cross_validate(x, y_arr, groups)
    spread = accuracy_spread(x, y_arr, groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic no excerpt of one side shows
        means = [np.nanmean(x[y_arr == c], 0) for c in (0, 1)]
    (xs,) = _standardise(x)
    w = fit_logistic(xs, y_arr)[:-1]
    order = np.argsort(-np.abs(w))[:telling]
    return {
        "accuracy": round(accuracy, 4),
        "accuracy_spread": [round(spread[0], 4), round(spread[1], 4)],
        "excerpts": {"real": int((y_arr == 0).sum()), "generated": int((y_arr == 1).sum())},
        "pieces": {"real": len(real), "generated": len(generated)},
        "features": len(names),
        "telling": [
            {
                "feature": names[j],
                "weight": round(float(w[j]), 3),
                "real": _round(means[0][j]),
                "generated": _round(means[1][j]),
            }
            for j in order
        ],
    }


def _round(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v), 3)


# -- phrases and returns ----------------------------------------------------------------------------------
def _spread(values: Sequence[float | None]) -> dict:
    v = np.array([x for x in values if x is not None], float)
    if not len(v):
        return {"n": 0}
    return {
        "median": round(float(np.median(v)), 4),
        "p5": round(float(np.percentile(v, 5)), 4),
        "p95": round(float(np.percentile(v, 95)), 4),
        "n": len(v),
    }


def form_section(
    real: Sequence[Sequence[Event]],
    generated: Sequence[Sequence[Event]],
    meters: tuple[Sequence[Meter | None], Sequence[Meter | None]] | None = None,
) -> dict:
    """Phrase cadences per 16 beats (median, 5th-95th percentiles) and the share of pieces in which a
    passage of 8 onsets comes back within 64 beats, for both sides; with each piece's meter (`meters`:
    the real pieces', the generated ones'), the share of bars that repeat an earlier one as well."""
    out = {}
    for i, (side, pieces) in enumerate((("real", real), ("generated", generated))):
        out[side] = {
            "phrase_cadences_per_16_beats": _spread([phrase_cadences_per_16_beats(p) for p in pieces]),
            "passage_returns": round(float(np.mean([passage_returns(p) for p in pieces])), 4)
            if pieces
            else None,
            "pieces": len(pieces),
        }
        if meters is not None:
            out[side]["repeated_bars"] = _spread([repeated_bars(p, m) for p, m in zip(pieces, meters[i])])
    return out
