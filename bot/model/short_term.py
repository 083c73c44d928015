"""The short-term model: what the piece so far says comes next, mixed with the network while sampling.

The network (the long-term model, in IDyOM's terms) knows the corpus; it does not remember the piece it is
writing beyond what its LSTM state keeps, so nothing it wrote comes back. The short-term model is learnt
from the piece itself (the seed's tokens and every token written since) at every step, as in IDyOM and in
Bjare, Lattner & Widmer (2022): for each order k up to `ORDERS`, the earlier places in the last `WINDOW`
tokens whose k tokens before them equal the last k tokens written, and which token followed each. The
orders are blended as PPM does (interpolated, escape method C), from order 1 up, on a uniform distribution:

    p_0 = uniform;  p_k = (c_k + e_k p_(k-1)) / (n_k + e_k)  where order k has matches, else p_(k-1)

with c_k the counts of what followed, n_k their sum and e_k how many different tokens they are. Its
confidence is how far below the uniform distribution's its entropy is (1 - H(p) / log V): 0 where the
piece says nothing, near 1 where a long context has always been followed by one token.

The mixture is linear, p = (1 - w) p_network + w p_short, with w = `weight` x confidence (IDyOM weighs its
models by entropy too). Linear, not geometric, because a return is exactly what the network would not write
afresh: a geometric mixture leaves a token the network finds unlikely unlikely, however sure the piece is.
The grammar, grid and ending rules apply after the mixture, so it changes which tokens are likely, never
which are allowed. Which of the closing bars ends a frame (a plain one or a phrase's end, a fermata) stays
the network's choice: the mixture sets how likely the frame is to close, the network how it closes.

`short_term_reference` is the plain version a reader can follow; `ShortTerm.distribution` is the same
model in `keras.ops` for the compiled loop (static shapes: a window of the stream sliced at every step),
and a test holds the two to the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ORDERS = 8  # the longest context matched, in tokens (a four-part frame is about six)
WINDOW = 1024  # how far back a context is looked for: about 64 beats of a chorale, a whole primer
# The mixture's weight at full confidence, chosen on 12 unseeded samples of 300 notes (RNG seeds 9000-9011,
# not `etude eval`'s) beside 40 training chorales, and on validation chorales 8-15 as seeds (`etude eval
# --fidelity` reports 0-7). A passage of 8 onsets came back in 0, 0, 17, 58, 83 and 75% of the samples at
# 0.6, 0.7, 0.8, 0.85, 0.9 and 1 (the training chorales: 25%), and 0.3, 1.7, 6.9, 19 and 68% of their
# passages were repeats (the chorales: 3.1%): past 0.85 the pieces loop.
WEIGHT = 0.85
# Without a seed the piece's own model is left out: at 0.85 the 500-note samples `etude eval --listener`
# reports brought a passage back in 50% of pieces (chorales 45%, before 0%) but closed half as many phrases
# (0.35 cadences per 16 beats against 0.68 before and the chorales' 0.51-2.18) in a narrower range, and a
# classifier told them from chorales 98% of the time against 75% before. Their phrases come back by the
# plan of `bot.model.form` instead.
UNSEEDED_WEIGHT = 0.0
# A seed with fewer onsets than this gives the short-term model nothing to bring back: such a request is
# sampled from the network alone (a passage that returns is 8 onsets long, `stats.REPEAT_ONSETS`).
MIN_SEED_ONSETS = 8
FALLBACK_NOTE = (
    f"the seed is too short to learn its motifs from (under {MIN_SEED_ONSETS} notes and chords): "
    "continued by the network alone"
)

Tensor = Any  # a tensor of the backend in use


def short_term_reference(
    history: Sequence[int], vocab_size: int, orders: int = ORDERS, window: int = WINDOW
) -> tuple[np.ndarray, float]:
    """The short-term model's distribution over the token after `history` (the piece so far, primer
    included), and its confidence in [0, 1]."""
    t = len(history) - 1
    counts = np.zeros((orders, vocab_size))
    for j in range(max(0, t - window), t):
        # How many tokens ending at j equal the tokens ending at t (the context both share).
        m = 0
        while m < orders and j - m >= 0 and history[j - m] == history[t - m]:
            m += 1
        counts[:m, history[j + 1]] += 1
    probs = np.full(vocab_size, 1.0 / vocab_size)
    for c in counts:
        if c.sum() > 0:
            escape = (c > 0).sum()
            probs = (c + escape * probs) / (c.sum() + escape)
    entropy = -np.sum(probs * np.log(np.maximum(probs, 1e-30)))
    return probs, float(1.0 - entropy / np.log(vocab_size))


def mix(
    network: np.ndarray, short: np.ndarray, confidence: float, closes: np.ndarray, weight: float = WEIGHT
) -> np.ndarray:
    """The linear mixture the sampler draws from (before its rules and temperature); `closes` marks the
    tokens that close a frame, whose share the mixture sets but which of them the network chooses."""
    w = weight * confidence
    p = (1.0 - w) * network + w * short
    share = network * closes / max(float(np.sum(network * closes)), 1e-30)
    return np.where(closes, np.sum(p * closes) * share, p)


class ShortTerm:
    """The short-term model in `keras.ops`, for a batch inside the compiled loop."""

    def __init__(self, ops, vocab_size: int, closes: Tensor, orders: int = ORDERS, window: int = WINDOW):
        self.ops, self.v, self.orders, self.window = ops, vocab_size, orders, window
        self.closes = ops.cast(closes, "float32")[None, :]  # the tokens that close a frame
        self.span = window + orders  # the slice of the stream a step reads

    def context(self, out: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What a step reads of the stream `out` (B, S) at position `t`: the window of the last
        `window + orders` tokens (tokens not yet written are -1), the last `orders` tokens newest first, and
        the window's positions. Small, so a conditional that skips the model copies this, not the stream."""
        ops, k, span = self.ops, self.orders, self.span
        b = ops.shape(out)[0]
        start = ops.maximum(t - span + 1, 0)
        pos = start + ops.arange(span, dtype="int32")
        # Tokens not yet written (a short stream's slice runs past t) never match.
        win = ops.where(pos[None, :] <= t, ops.slice(out, (0, start), (b, span)), -1)
        # The last k tokens, newest first; places before the stream (-2) match nothing.
        back = t - ops.arange(k, dtype="int32")
        cur = ops.where(back[None, :] >= 0, ops.take(out, ops.maximum(back, 0), axis=1), -2)
        return win, cur, pos

    def distribution(self, out: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(probs (B, V), confidence (B,)) of the token after position `t` of `out` (B, S), the stream so
        far (S must be at least `window + orders`)."""
        return self.from_context(*self.context(out, t), t)

    def from_context(self, win: Tensor, cur: Tensor, pos: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """`distribution` from what `context` read."""
        ops, k, span = self.ops, self.orders, self.span
        b = ops.shape(win)[0]
        padded = ops.concatenate([ops.full((b, k - 1), -1, "int32"), win], axis=1)
        # Candidate c (0 .. span-2) is the place start + c, followed by win[:, c + 1].
        cand = pos[:-1]
        valid = (cand >= t - self.window) & (cand < t)
        nxt = win[:, 1:]
        # How many tokens ending at each candidate equal the last ones written, up to k: the contexts
        # matched are nested (a match of order i is one of every lower order), so their count is the length.
        matched = ops.broadcast_to(valid[None, :], ops.shape(nxt))
        length = ops.zeros(ops.shape(nxt), "int32")
        for i in range(k):
            matched = matched & (padded[:, k - 1 - i : k - 1 - i + span - 1] == cur[:, i : i + 1])
            length = length + ops.cast(matched, "int32")
        # exact (B, k + 1, V): one segment per (row, match length, token), so each candidate is counted once
        # (length 0 counts for no order); a candidate of length m counts for every order up to m.
        row = ops.arange(b, dtype="int32")[:, None] * ((k + 1) * self.v)
        ids = row + length * self.v + ops.maximum(nxt, 0)
        exact = ops.segment_sum(
            ops.ones((b * (span - 1),), "float32"), ops.reshape(ids, (-1,)), num_segments=b * (k + 1) * self.v
        )
        exact = ops.reshape(exact, (b, k + 1, self.v))[:, 1:, :]
        counts = ops.flip(ops.cumsum(ops.flip(exact, axis=1), axis=1), axis=1)
        probs = ops.full((b, self.v), 1.0 / self.v, "float32")
        for i in range(k):
            c = counts[:, i, :]
            n = ops.sum(c, axis=1, keepdims=True)
            escape = ops.sum(ops.cast(c > 0, "float32"), axis=1, keepdims=True)
            probs = ops.where(n > 0, (c + escape * probs) / ops.maximum(n + escape, 1.0), probs)
        entropy = -ops.sum(probs * ops.log(ops.maximum(probs, 1e-30)), axis=1)
        return probs, 1.0 - entropy / float(np.log(self.v))

    def mix(self, logits: Tensor, context, t: Tensor, weight: Tensor) -> Tensor:
        """Logits of the network mixed with the short-term model (read from `context`, what `context()`
        returns), `weight` (B,) at full confidence."""
        ops = self.ops
        short, confidence = self.from_context(*context, t)
        w = (weight * confidence)[:, None]
        network = ops.softmax(logits, axis=-1)
        p = (1.0 - w) * network + w * short
        # Whether a frame closes on a phrase end (a fermata) stays the network's choice: the piece's own
        # past has far more plain closing bars than fermatas, and would talk the phrases out of ending.
        closing = network * self.closes
        share = closing / ops.maximum(ops.sum(closing, axis=1, keepdims=True), 1e-30)
        p = ops.where(self.closes > 0, ops.sum(p * self.closes, axis=1, keepdims=True) * share, p)
        # A row with weight 0 keeps the network's own logits, bit for bit.
        return ops.where(w > 0, ops.log(ops.maximum(p, 1e-30)), logits)
