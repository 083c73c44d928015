"""Score a model and its baselines on the validation pieces, in bits per note.

`nll_bits_per_note` is the negative log-likelihood of the validation pieces in bits, summed over all the
tokens of each note or chord and divided by the number of notes and chords, so it does not depend on how
many tokens an encoding spends per note. `accuracy` is top-1 accuracy per token. What the samples sound
like is `bot.eval.music_eval`'s part of `etude eval`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.cards import REPO_MODELS
from bot.errors import ModelNotFound
from bot.model import network as M
from bot.model.card import store_section
from bot.music.corpus import encode_pieces, load_pieces, piece_meter, split_by_piece
from bot.music.encoding import Vocabulary
from bot.music.meter import Meter

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


def network_probs(
    model: M.LoadedModel, seqs: Sequence[np.ndarray], meters: Sequence[Meter] | None = None, bucket: int = 256
) -> list[np.ndarray]:
    """Next-token probabilities along each whole piece for an every-step network (told each piece's
    meter when it takes one).

    One piece at a time, so the state runs over the whole piece. Each is padded at its end to a multiple
    of `bucket` tokens: the network reads left to right, so the padding cannot change the positions
    before it, and a compiling backend (JAX) sees a few input shapes instead of one per piece.
    """
    out = []
    for i, s in enumerate(seqs):
        n = len(s) - 1
        x = np.zeros((1, -(-n // bucket) * bucket), np.int32)
        x[0, :n] = s[:-1]
        inputs = model.inputs(x, [meters[i]] if meters else None)
        logits = np.asarray(model.net(inputs, training=False))[0, :n]
        out.append(_softmax(logits.astype(np.float64)))
    return out


def tutorial_probs(net, config: M.Config, seq: np.ndarray, vocab_size: int, batch: int = 512) -> np.ndarray:
    """The tutorial's way: each next token predicted from the 100 scaled tokens before it."""
    from bot.model.epochs import tutorial_window

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
    source = data or validation_source(m.card)
    train_p, val_p = split_by_piece(load_pieces(source))
    vocab = m.vocab
    train_seqs, val_seqs = encode_pieces(train_p, vocab), encode_pieces(val_p, vocab)

    model_probs = network_probs(m, val_seqs, [piece_meter(p) for p in val_p])
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

    tutorial_dir = Path(tutorial) if tutorial else REPO_MODELS / "baselines" / f"tutorial-{_slug(source)}"
    try:
        tm = M.load(tutorial_dir)
    except ModelNotFound:
        tm = None
    if tm is not None:
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
        # A network of another vocabulary (fewer style tokens, another pitch range) reads the same pieces
        # in its own tokens: bits per note count per note and chord, whatever the tokens.
        own = (
            sub_seqs
            if tm.vocab.tokens == vocab.tokens
            else encode_pieces([val_p[i] for i in subset], tm.vocab)
        )
        tp = [tutorial_probs(tm.net, tm.config, s, len(tm.vocab)) for s in own]
        same = score_distributions(lambda j: model_probs[subset[j]], sub_seqs, vocab)
        baselines["tutorial"] = {
            **score_distributions(lambda j: tp[j], own, tm.vocab),
            "training_seconds": tm.card.get("training", {}).get("seconds"),
            "model_on_same_notes": same["nll_bits_per_note"],
        }
    result["baselines"] = baselines
    best = min(b["nll_bits_per_note"] for b in baselines.values())
    result["improvement_over_best_baseline"] = round(1 - result["model"]["nll_bits_per_note"] / best, 4)
    result["data"] = {"source": source, "val_pieces": len(val_p)}
    result["seconds"] = round(time.monotonic() - t0, 1)
    if write_card:
        store_section(m.path, "evaluation", {k: v for k, v in result.items() if k != "seconds"})
    return result


def validation_source(card: dict) -> str:
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
