"""A next-token model stepped one token at a time from Python over a few rows: what the harmonizer samples
from, with given tokens (the melody) between the sampled ones and the rows regathered as its particles are
resampled. The network's LSTM runs in NumPy from its own weights (`NumpySteps`); the n-gram baseline runs
the same way (`NgramSteps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from bot.model.conditioning import told
from bot.music.meter import Meter, meter_ids

PARTICLES = 4  # rows stepped at once: the harmonizer's proposals per chord (chords about as often triads
# or sevenths as Bach's; see the README)


class Steps(Protocol):
    """A next-token model stepped one token at a time over `k` rows."""

    k: int

    def start(self, head: Sequence[int]) -> np.ndarray:
        """Feed `head` (`<start>`, style, mode) to every row; log-probabilities (k, V) of the next token."""

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Continue row `rows[i]` with `tokens[i]`; log-probabilities (k, V) of each row's next token."""


class NumpySteps:
    """The network's LSTM stepped in NumPy from its own weights.

    At a handful of rows one step is a few small matrix products; NumPy does them in a fraction of the
    time a framework takes to dispatch a compiled call, whichever Keras backend loaded the weights, and the
    rows can be regathered (resampled) for free. Networks with the tutorial's head (batch norm, a hidden
    dense layer) are not stepped here: `supports` says so and `harmonize` refuses them in one line.
    """

    def __init__(
        self, model, k: int = PARTICLES, meter: Meter | None = None, start: int | None = None, stats=None
    ):
        net, cfg = model.net, model.config
        self.k = k
        # A network told statistics (`Config.stats_input`) hears `stats` at every step; none: not told.
        self.told = told(stats, k) if cfg.stats_input else None
        # A network told where the beat is (`Config.meter_input`) hears the time each row has reached.
        self.meter = meter or Meter()
        # Where in its bar the stream's time begins: the meter's own phase unless the caller says.
        self.start_pos = self.meter.position(0.0) if start is None else start
        self.meter_embed = (
            np.asarray(net.get_layer("meter_embed").embeddings, np.float32) if cfg.meter_input else None
        )
        self.moves = model.vocab.shift_table()
        self.bar_pos = np.zeros(k, np.int32)
        self.layers = []
        for i in range(cfg.layers):
            cell = net.get_layer(f"lstm_{i}").cell
            w = np.concatenate([np.asarray(cell.kernel), np.asarray(cell.recurrent_kernel)], axis=0)
            b = np.asarray(cell.bias) if cell.use_bias else np.zeros(w.shape[1])
            self.layers.append((w.astype(np.float32), b.astype(np.float32)))
        self.embed = (
            np.asarray(net.get_layer("embed").embeddings, np.float32)
            if cfg.input_mode == "embedding"
            else None
        )
        self.scale = float(cfg.vocab_size)
        dense = net.get_layer("logits")
        self.kernel, self.bias = np.asarray(dense.kernel, np.float32), np.asarray(dense.bias, np.float32)
        self.hidden = cfg.hidden
        self.states: list[tuple[np.ndarray, np.ndarray]] = []

    @staticmethod
    def supports(model) -> bool:
        cfg = model.config
        if cfg.head != "linear":
            return False
        cells = [model.net.get_layer(f"lstm_{i}").cell for i in range(cfg.layers)]
        return all(
            c.activation.__name__ == "tanh" and c.recurrent_activation.__name__ == "sigmoid" for c in cells
        )

    def start(self, head: Sequence[int]) -> np.ndarray:
        zeros = np.zeros((self.k, self.hidden), np.float32)
        self.states = [(zeros, zeros) for _ in self.layers]
        self.bar_pos = np.full(self.k, self.start_pos, np.int32)
        logp = np.zeros(0)
        for token in head:
            logp = self.feed(np.full(self.k, token), np.arange(self.k))
        return logp

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        self.bar_pos = (self.bar_pos[rows] + self.moves[tokens]) % self.meter.bar_steps
        if self.embed is not None:
            x = self.embed[tokens]
            if self.meter_embed is not None:
                where = self.meter_embed[meter_ids(self.bar_pos, self.meter.bar_steps)]
                x = np.concatenate([x, where], axis=1)
            if self.told is not None:
                x = np.concatenate([x, self.told[: len(x)]], axis=1)
        else:  # the tutorial's input: the token index divided by the vocabulary size
            x = (tokens.astype(np.float32) / self.scale)[:, None]
        new = []
        for (w, b), (h, c) in zip(self.layers, self.states, strict=True):
            z = np.concatenate([x, h[rows]], axis=1) @ w + b
            i, f, g, o = np.split(z, 4, axis=1)  # Keras's gate order
            c = _sigmoid(f) * c[rows] + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
            new.append((h, c))
            x = h
        self.states = new
        logits = (x @ self.kernel + self.bias).astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # the same function, without overflow for large |x|


class NgramSteps:
    """Any model with `distribution(context) -> probabilities` and an order `n` (the n-gram baseline)."""

    def __init__(self, ngram, k: int = PARTICLES):
        self.ngram, self.k = ngram, k
        self.contexts: list[tuple[int, ...]] = []

    def start(self, head: Sequence[int]) -> np.ndarray:
        self.contexts = [()] * self.k
        logp = np.zeros(0)
        for token in head:
            logp = self.feed(np.full(self.k, token), np.arange(self.k))
        return logp

    def feed(self, tokens: np.ndarray, rows: np.ndarray) -> np.ndarray:
        keep = self.ngram.n - 1
        # The n-gram pads a piece's beginning with <pad> (id 0); so does this context.
        self.contexts = [
            ((0,) * keep + self.contexts[r] + (int(t),))[-keep:] for t, r in zip(tokens, rows, strict=True)
        ]
        cache: dict[tuple, np.ndarray] = {}
        out = []
        for ctx in self.contexts:
            if ctx not in cache:
                cache[ctx] = np.log(np.maximum(self.ngram.distribution(ctx), 1e-30))
            out.append(cache[ctx])
        return np.stack(out)
