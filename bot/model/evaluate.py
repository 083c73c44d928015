"""Score a model and its baselines on the validation pieces, in bits per note.

`nll_bits_per_note` is the negative log-likelihood of the validation pieces in bits, summed over all the
tokens of each note or chord and divided by the number of notes and chords, so it does not depend on how
many tokens an encoding spends per note. `accuracy` is top-1 accuracy per token.

The musical section samples a fixed set of pieces (fixed RNG seeds) through the public `Composer` and
sets their musical statistics (`bot.music.stats`) beside the validation pieces'; the sweep does the same
for a grid of temperature and top-p; key fidelity continues seeds cut from real pieces and checks that
the continuation keeps the seed's key.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.errors import ModelNotFound
from bot.model import network as M
from bot.music import analysis
from bot.music import stats as S
from bot.music.corpus import encode_pieces, load_pieces, split_by_piece
from bot.music.encoding import Vocabulary
from bot.options import Options

LOG2E = 1 / math.log(2)


def _result(bits: float, correct: int, tokens: int, notes: int, **extra) -> dict:
    return {
        "nll_bits_per_note": round(bits / max(notes, 1), 4),
        "accuracy": round(correct / max(tokens, 1), 4),
        "notes": int(notes),
        "tokens": int(tokens),
        **extra,
    }


def score_distributions(probs_for: callable, seqs: Sequence[np.ndarray], vocab: Vocabulary) -> dict:
    """Score each token after `<start>`, given `probs_for(i)`: the (len - 1, V) next-token probabilities."""
    bits = 0.0
    correct = tokens = notes = 0
    for i, seq in enumerate(seqs):
        p = probs_for(i)
        target = seq[1:]
        chosen = np.maximum(p[np.arange(len(target)), target], 1e-12)
        bits += float(-np.log2(chosen).sum())
        correct += int((p.argmax(1) == target).sum())
        tokens += len(target)
        notes += vocab.count_events(target)
    return _result(bits, correct, tokens, notes)


# -- baselines -------------------------------------------------------------------------------------
class Unigram:
    """Token frequencies with add-one smoothing."""

    def __init__(self, seqs: Sequence[np.ndarray], vocab_size: int):
        counts = np.ones(vocab_size)
        for s in seqs:
            counts += np.bincount(s[1:], minlength=vocab_size)
        counts[0] = 0  # <pad> never occurs
        self.p = counts / counts.sum()

    def probs(self, seq: np.ndarray) -> np.ndarray:
        return np.tile(self.p, (len(seq) - 1, 1))


class KneserNey:
    """Interpolated Kneser–Ney n-gram model over tokens (absolute discount `d` at every order)."""

    def __init__(self, seqs: Sequence[np.ndarray], vocab_size: int, order: int = 5, d: float = 0.75):
        self.n, self.v, self.d = order, vocab_size, d
        # counts[k][context of length k][token]: raw counts at the top order, continuation counts below.
        self.counts: list[dict[tuple, dict[int, int]]] = [defaultdict(dict) for _ in range(order)]
        seen: set[tuple] = set()
        for s in seqs:
            padded = [0] * (order - 1) + [int(t) for t in s]
            for i in range(order - 1, len(padded)):
                gram = tuple(padded[i - order + 1 : i + 1])
                top = self.counts[order - 1][gram[:-1]]
                top[gram[-1]] = top.get(gram[-1], 0) + 1
                # A lower-order continuation count rises once per new distinct left extension.
                for k in range(order - 1, 0, -1):
                    g = gram[order - 1 - k :]
                    if g in seen:
                        break
                    seen.add(g)
                    low = self.counts[k - 1][g[1:-1]]
                    low[g[-1]] = low.get(g[-1], 0) + 1
        self.tables = [
            {ctx: (np.array(list(c.keys())), np.array(list(c.values()), float)) for ctx, c in level.items()}
            for level in self.counts
        ]

    def distribution(self, context: tuple) -> np.ndarray:
        p = np.full(self.v, 1.0 / self.v)
        for k in range(0, self.n):
            ctx = context[len(context) - k :] if k else ()
            entry = self.tables[k].get(ctx)
            if entry is None:
                continue
            tokens, counts = entry
            total = counts.sum()
            q = np.zeros(self.v)
            q[tokens] = np.maximum(counts - self.d, 0) / total
            p = q + (self.d * len(tokens) / total) * p
        return p

    def probs(self, seq: np.ndarray) -> np.ndarray:
        padded = [0] * (self.n - 1) + [int(t) for t in seq]
        return np.stack(
            [self.distribution(tuple(padded[i - self.n + 1 : i])) for i in range(self.n, len(padded))]
        )


# -- networks --------------------------------------------------------------------------------------
def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def network_probs(net, seqs: Sequence[np.ndarray], bucket: int = 256) -> list[np.ndarray]:
    """Next-token probabilities along each whole piece for an every-step network.

    One piece at a time, so the state runs over the whole piece. Each is padded at its end to a multiple
    of `bucket` tokens: the network reads left to right, so the padding cannot change the positions
    before it, and a compiling backend (JAX) sees a few input shapes instead of one per piece.
    """
    out = []
    for s in seqs:
        n = len(s) - 1
        x = np.zeros((1, -(-n // bucket) * bucket), np.int32)
        x[0, :n] = s[:-1]
        logits = np.asarray(net(x, training=False))[0, :n]
        out.append(_softmax(logits.astype(np.float64)))
    return out


def tutorial_probs(net, config: M.Config, seq: np.ndarray, vocab_size: int, batch: int = 512) -> np.ndarray:
    """The tutorial's way: each next token predicted from the 100 scaled tokens before it."""
    from bot.model.train import tutorial_window

    w = np.stack([tutorial_window(seq, t, config.seq_len) for t in range(1, len(seq))])
    x = (w[..., None] / float(vocab_size)).astype("float32")
    logits = np.concatenate(
        [np.asarray(net(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    )
    return _softmax(logits.astype(np.float64))


# -- the whole evaluation --------------------------------------------------------------------------
def evaluate(
    model_dir: str | None = None,
    data: str | None = None,
    tutorial: str | None = None,
    write_card: bool = False,
    tutorial_notes: int = 1500,
    ngram_order: int = 5,
) -> dict:
    t0 = time.monotonic()
    m = M.load(model_dir)
    source = data or _validation_source(m.card)
    train_p, val_p = split_by_piece(load_pieces(source))
    vocab = m.vocab
    train_seqs, val_seqs = encode_pieces(train_p, vocab), encode_pieces(val_p, vocab)

    model_probs = network_probs(m.net, val_seqs)
    result = {"model": {"name": m.name, **score_distributions(lambda i: model_probs[i], val_seqs, vocab)}}

    # The baselines learn from the model's own training streams: every piece in C major or A minor.
    aug = list(train_seqs)
    uni = Unigram(aug, len(vocab))
    kn = KneserNey(aug, len(vocab), order=ngram_order)
    baselines = {
        "unigram": score_distributions(lambda i: uni.probs(val_seqs[i]), val_seqs, vocab),
        "ngram": {
            "kind": f"interpolated Kneser-Ney, order {ngram_order}",
            **score_distributions(lambda i: kn.probs(val_seqs[i]), val_seqs, vocab),
        },
    }

    tutorial_dir = Path(tutorial) if tutorial else M.REPO_MODELS / "baselines" / f"tutorial-{_slug(source)}"
    try:
        tm = M.load(tutorial_dir)
    except ModelNotFound:
        tm = None
    if tm is not None:
        if tm.vocab.tokens != vocab.tokens:
            raise ModelNotFound(f"{tutorial_dir} was trained with another vocabulary than {m.path}")
        # The tutorial needs one 100-token pass per token, so it is scored on the first validation pieces
        # (by name) up to `tutorial_notes` notes; the model's figure on the same notes stands beside it.
        order = sorted(range(len(val_p)), key=lambda i: val_p[i].name)
        subset, notes = [], 0
        for i in order:
            if notes >= tutorial_notes:
                break
            subset.append(i)
            notes += len(val_p[i].events)
        sub_seqs = [val_seqs[i] for i in subset]
        tp = [tutorial_probs(tm.net, tm.config, s, len(vocab)) for s in sub_seqs]
        same = score_distributions(lambda j: model_probs[subset[j]], sub_seqs, vocab)
        baselines["tutorial"] = {
            **score_distributions(lambda j: tp[j], sub_seqs, vocab),
            "training_seconds": tm.card.get("training", {}).get("seconds"),
            "model_on_same_notes": same["nll_bits_per_note"],
        }
    result["baselines"] = baselines
    best = min(b["nll_bits_per_note"] for b in baselines.values())
    result["improvement_over_best_baseline"] = round(1 - result["model"]["nll_bits_per_note"] / best, 4)
    result["data"] = {"source": source, "val_pieces": len(val_p)}
    result["seconds"] = round(time.monotonic() - t0, 1)
    if write_card:
        card = dict(m.card)
        card["evaluation"] = {k: v for k, v in result.items() if k != "seconds"}
        M.write_card(m.path, card)
    return result


def _validation_source(card: dict) -> str:
    """The data source whose held-out pieces a model is scored on: its card's `validation_source` (a model
    trained on several corpora is held to the chorales it was stopped on), else its training source."""
    data = card.get("data", {})
    return data.get("validation_source") or data.get("source", "chorales")


def _slug(source: str) -> str:
    return Path(source.replace("corpus:", "")).name or "data"


def table(result: dict) -> str:
    rows = [("model", result["model"])] + list(result["baselines"].items())
    lines = [f"{'':10} {'bits/note':>10} {'accuracy':>9} {'notes':>7}"]
    lines += [
        f"{n:10} {r['nll_bits_per_note']:>10.3f} {r['accuracy']:>9.3f} {r['notes']:>7}" for n, r in rows
    ]
    lines.append(f"improvement over the best baseline: {result['improvement_over_best_baseline'] * 100:.1f}%")
    return "\n".join(lines)


# -- music: what the samples sound like beside the validation pieces ------------------------------------
# Piece i of a run is sampled with RNG seed MUSIC_RNG_SEED + i, so every run hears the same pieces.
MUSIC_RNG_SEED = 1000
MUSIC_PIECES, MUSIC_LENGTH = 24, 500
QUICK_PIECES, QUICK_LENGTH = 8, 200
SWEEP_TEMPERATURES = (0.7, 0.85, 1.0)
SWEEP_TOP_PS = (0.9, 0.95, 1.0)
KEY_SEEDS_QUICK = 16  # pieces whose first parts seed the key-fidelity measurement with --quick
KEY_SEED_ONSETS = 96  # a seed is at most this many onsets of a piece, at most half of it


def _music_data(m, data: str | None) -> tuple[list, list]:
    source = data or _validation_source(m.card)
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
    temperature = defaults.temperature if temperature is None else temperature
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
        key = analysis.estimate_key(first)
        if key is None:
            skipped += 1  # a seed without a key (one repeated pitch) says nothing here
            continue
        seed = composer.seed(midi_bytes(first, tempo=p.tempo), p.name)
        jobs.append((Options(length=length, rng_seed=MUSIC_RNG_SEED + i), seed))
        keys.append(key)
        own_key = analysis.estimate_key(after)
        own.append(own_key is not None and analysis.fifths_distance(key, own_key) <= 1)
    done = composer.compose(jobs) if jobs else []
    stays = []
    for key, c in zip(keys, done):
        k = analysis.estimate_key(c.events)
        stays.append(k is not None and analysis.fifths_distance(key, k) <= 1)
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


def _store_in_card(folder, section: str, value: dict) -> None:
    """One section of a model's card replaced, the rest as written now (the loss part may just have been)."""
    card = dict(M.load_card(folder))
    card[section] = value
    M.write_card(folder, card)


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
