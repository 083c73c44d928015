"""The sampler: many requests at once, the LSTM state carried from token to token, one compiled graph.

The tutorial called `model.predict` on a 100-token window once per note and took the argmax: a Python
round trip and 100 LSTM steps for every note, and a tendency to repeat one note for ever. Here the whole
generation is one `tf.while_loop`: each step feeds one token per request through the LSTM cells, keeping
their state, so a note costs a few cell steps (one per token) and no Python at all.

One loop does both priming and sampling. While a request is still inside its primer (the `<start>` token
and the tokens of its seed) the next input is the primer's next token; after that it is drawn from the
network's distribution, sharpened by `temperature`, cut to the `top_p` nucleus and restricted by the token
grammar. Every request has its own uniform random numbers, drawn from its own RNG seed before the loop, so
its result does not depend on which other requests share the batch.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bot.errors import BadOption
from bot.model.backend import quiet_import
from bot.model.network import LoadedModel
from bot.options import SPECS

log = logging.getLogger(__name__)

MAX_RUN = 4  # an event may repeat at most this many times in a row: the tutorial's loop got stuck on one
MAX_CHORD = 10  # pitches in one event
MAX_SHIFT_CHAIN = 4  # consecutive shift tokens (a rest of up to 16 beats)
MAX_PRIMER_TOKENS = 768  # how much of a long seed warms the state; the LSTM's memory is shorter anyway
MIN_SHARD = 4  # smallest batch worth a thread of its own on a CPU
TOKENS_PER_EVENT_CAP = 1 + MAX_SHIFT_CHAIN + MAX_CHORD  # upper bound used to size the output buffer


def check_sampling(length: int, temperature: float, top_p: float) -> None:
    """Raise `BadOption` for a length, temperature or top-p the sampler does not take."""
    SPECS["length"].check(length)
    SPECS["temperature"].check(temperature)
    SPECS["top_p"].check(top_p)


class _Loop(NamedTuple):
    """What the sampling loop carries from one step to the next; all but `t` and `out` per request."""

    t: object  # step
    tok: object  # the token just written, input to this step
    states: object  # LSTM (h, c) per layer
    out: object  # TensorArray of the stream so far
    events: object  # events written after the primer
    done: object
    steps: object  # stream length once done
    run: object  # how many times in a row the last event has repeated
    cur_hash: object  # hash of the event being written
    prev_hash: object  # hash of the last complete event
    cur_first: object  # first pitch of the event being written
    prev_first: object  # first pitch of the last complete event
    chord: object  # pitches in the event being written
    shifts: object  # consecutive shift tokens


@dataclass(frozen=True)
class Request:
    """One piece to sample: `length` new events after `primer` (token ids, starting with `<start>`)."""

    primer: tuple[int, ...]
    length: int = 500
    temperature: float = 1.0
    top_p: float = 0.95
    rng_seed: int = 0

    def check(self) -> None:
        check_sampling(self.length, self.temperature, self.top_p)
        if not self.primer:
            raise BadOption("a request needs a primer (at least the start token)")


class Sampler:
    """Compiles the sampling loop for one loaded model; `sample()` serves any batch of requests."""

    def __init__(self, model: LoadedModel, jit: bool = False):
        self.tf = quiet_import()
        self.model = model
        self.vocab = model.vocab
        net = model.net
        cfg = model.config
        self.cells = [net.get_layer(f"lstm_{i}").cell for i in range(cfg.layers)]
        # One matrix per layer for [input, state] -> gates: a single matmul per layer and step. Keras's own
        # cell makes eight when the layer was trained with recurrent dropout, as the tutorial's was.
        tf = self.tf
        self.fused = [
            (
                tf.Variable(tf.concat([c.kernel, c.recurrent_kernel], 0), trainable=False),
                tf.Variable(c.bias if c.use_bias else tf.zeros(4 * c.units), trainable=False),
                c.activation,
                c.recurrent_activation,
            )
            for c in self.cells
        ]
        self.embed = net.get_layer("embed") if cfg.input_mode == "embedding" else None
        last_lstm = net.layers.index(net.get_layer(f"lstm_{cfg.layers - 1}"))
        self.head = [
            layer for layer in net.layers[last_lstm + 1 :] if not layer.name.startswith(("drop", "head_drop"))
        ]
        self.hidden = cfg.hidden
        self.scale = float(len(self.vocab))
        v = self.vocab
        self.allowed = self.tf.constant(v.grammar())
        kinds = np.zeros(len(v), np.int32)  # 0 special, 1 shift, 2 pitch, 3 duration
        kinds[v.shift_base : v.pitch_base] = 1
        kinds[v.pitch_base : v.duration_base] = 2
        kinds[v.duration_base :] = 3
        self.kinds = self.tf.constant(kinds)
        self._loop = self.tf.function(self._generate, jit_compile=jit, reduce_retracing=True)
        self._step = self.tf.function(self._step_graph, jit_compile=jit, reduce_retracing=True)
        self.on_gpu = bool(self.tf.config.list_logical_devices("GPU"))

    # -- one step of the network ------------------------------------------------------------------------
    def _logits(self, tokens, states):
        tf = self.tf
        if self.embed is not None:
            x = self.embed(tokens)
        else:  # the tutorial's input: the token index divided by the vocabulary size
            x = tf.cast(tokens, tf.float32)[:, None] / self.scale
        new_states = []
        for (w, b, act, gate), (h, c) in zip(self.fused, states):
            z = tf.matmul(tf.concat([x, h], 1), w) + b
            i, f, g, o = tf.split(z, 4, axis=1)  # Keras's gate order
            c = gate(f) * c + gate(i) * act(g)
            h = gate(o) * act(c)
            x = h
            new_states.append((h, c))
        for layer in self.head:
            x = layer(x, training=False)
        return x, new_states

    # -- one token at a time, for samplers driven from Python (constrained harmonization) -------------------
    def initial_states(self, batch: int) -> list:
        """The LSTM states before the first token, for `batch` rows."""
        zeros = self.tf.zeros((batch, self.hidden))
        return [(zeros, zeros) for _ in self.cells]

    def step(self, tokens: np.ndarray, rows: np.ndarray, states: list) -> tuple[np.ndarray, list]:
        """Feed `tokens` (B,) to the rows `rows` (B,) of `states`: next-token log-probabilities (B, V), new states.

        Gathering by `rows` first lets a caller continue from any of its rows (resampling, or one row
        copied to all) without a round trip of the states through Python.
        """
        tf = self.tf
        logp, states = self._step(tf.constant(tokens, tf.int32), tf.constant(rows, tf.int32), states)
        return logp.numpy(), states

    def _step_graph(self, tokens, rows, states):
        tf = self.tf
        states = [(tf.gather(h, rows), tf.gather(c, rows)) for h, c in states]
        logits, states = self._logits(tokens, states)
        return tf.nn.log_softmax(tf.cast(logits, tf.float32)), states

    # -- the loop, traced once per batch shape ------------------------------------------------------------
    def _generate(self, primers, primer_len, lengths, temperature, top_p, uniforms, max_steps):
        """Sample a batch.

        primers (B, P) int32, right-padded; primer_len (B,); lengths (B,) events to add; temperature, top_p
        (B,) float32; uniforms (B, S) float32 in [0, 1); max_steps a Python int (a static size for XLA). Returns tokens (B, S) int32: the
        whole stream, primer included, and the number of steps each request took (B,).
        """
        tf = self.tf
        b = tf.shape(primers)[0]
        v = len(self.vocab)
        zeros = tf.zeros((b, self.hidden))
        states = [(zeros, zeros) for _ in self.cells]
        pitch_ids = tf.range(v)
        kinds = self.kinds
        big = tf.constant(2**31 - 1, tf.int64)

        def body(s: _Loop) -> tuple[_Loop]:
            logits, states = self._logits(s.tok, s.states)
            logits = tf.cast(logits, tf.float32)
            kind = tf.gather(kinds, s.tok)
            # Grammar: only tokens that may follow the previous one, within the chord and rest caps.
            ok = tf.gather(self.allowed, s.tok)
            next_kind = kinds[None, :]
            ok &= ~((next_kind == 2) & (s.chord[:, None] >= MAX_CHORD))
            ok &= ~((next_kind == 1) & (s.shifts[:, None] >= MAX_SHIFT_CHAIN) & (kind[:, None] == 1))
            # Repetition guard: after MAX_RUN equal events the next one may not start on the same pitch.
            stuck = (s.run >= MAX_RUN) & (kind == 1)
            ok &= ~(stuck[:, None] & (pitch_ids[None, :] == s.prev_first[:, None]))
            scaled = logits / temperature[:, None]
            scaled = tf.where(ok, scaled, tf.fill(tf.shape(scaled), -1e9))
            probs = tf.nn.softmax(scaled)
            # Nucleus: keep the most likely tokens whose mass reaches top_p (always at least one).
            order = tf.argsort(probs, direction="DESCENDING", stable=True)
            sorted_p = tf.gather(probs, order, batch_dims=1)
            before = tf.cumsum(sorted_p, axis=1, exclusive=True)
            sorted_p = tf.where(before < top_p[:, None], sorted_p, 0.0)
            cdf = tf.cumsum(sorted_p, axis=1)
            u = uniforms[:, s.t] * cdf[:, -1]
            pick = tf.minimum(tf.reduce_sum(tf.cast(cdf <= u[:, None], tf.int32), axis=1), v - 1)
            sampled = tf.gather(order, pick[:, None], batch_dims=1)[:, 0]
            # Inside the primer the next token is given; done requests repeat <pad>.
            in_primer = s.t + 1 < primer_len
            given = tf.gather(primers, tf.minimum(s.t + 1, tf.shape(primers)[1] - 1), axis=1)
            nxt = tf.where(in_primer, given, sampled)
            nxt = tf.where(s.done, tf.zeros_like(nxt), nxt)

            # Book-keeping for the caps and the repetition guard.
            nk = tf.gather(kinds, nxt)
            starts_event = (nk == 1) & (kind != 1)
            h = tf.cast(nxt, tf.int64)
            cur_hash = tf.where(starts_event, h, (s.cur_hash * 1000003 + h) % big)
            cur_first = tf.where((nk == 2) & (kind == 1), nxt, s.cur_first)
            closes = (nk == 3) & ~s.done
            events = s.events + tf.cast(closes & ~in_primer, tf.int32)
            finished = (events >= lengths) & ~in_primer & ~s.done
            return (
                _Loop(
                    t=s.t + 1,
                    tok=nxt,
                    states=states,
                    out=s.out.write(s.t + 1, nxt),
                    events=events,
                    done=s.done | finished,
                    steps=tf.where(finished, s.t + 2, s.steps),
                    run=tf.where(closes, tf.where(cur_hash == s.prev_hash, s.run + 1, 1), s.run),
                    cur_hash=cur_hash,
                    prev_hash=tf.where(closes, cur_hash, s.prev_hash),
                    cur_first=cur_first,
                    prev_first=tf.where(closes, cur_first, s.prev_first),
                    chord=tf.where(nk == 2, s.chord + 1, tf.where(nk == 1, 0, s.chord)),
                    shifts=tf.where(nk == 1, tf.where(kind == 1, s.shifts + 1, 1), 0),
                ),
            )

        def cond(s: _Loop):
            return (s.t + 1 < max_steps) & ~tf.reduce_all(s.done)

        out = tf.TensorArray(tf.int32, size=max_steps, element_shape=tf.TensorShape([None]))
        izeros = tf.zeros((b,), tf.int32)
        no_hash = tf.fill((b,), tf.constant(-1, tf.int64))
        start = _Loop(
            t=tf.constant(0),
            tok=primers[:, 0],
            states=states,
            out=out.write(0, primers[:, 0]),
            events=izeros,
            done=tf.zeros((b,), tf.bool),
            steps=tf.fill((b,), max_steps),
            run=izeros,
            cur_hash=no_hash,
            prev_hash=no_hash - 1,  # never equal to the first event's hash
            cur_first=izeros,
            prev_first=izeros - 1,
            chord=izeros,
            shifts=izeros,
        )
        (end,) = tf.while_loop(cond, body, (start,), maximum_iterations=max_steps - 1)
        return tf.transpose(end.out.stack()), end.steps

    # -- the public call ------------------------------------------------------------------------------------------
    def sample(self, requests: list[Request]) -> list[list[int]]:
        """The new tokens of each request (without its primer), each ending with a complete event.

        On a CPU a large batch is cut into one shard per core, sampled side by side: two half batches on
        two threads do about 1.6 times the work of one whole batch, whose matmuls leave a core idle
        between steps. Each request's result is the same in any shard.
        """
        for r in requests:
            r.check()
        shards = 1 if self.on_gpu else max(1, min(os.cpu_count() or 1, len(requests) // MIN_SHARD))
        if shards == 1:
            return self._sample_batch(requests)
        size = -(-len(requests) // shards)
        parts = [requests[i : i + size] for i in range(0, len(requests), size)]
        with ThreadPoolExecutor(len(parts)) as pool:
            return [tokens for part in pool.map(self._sample_batch, parts) for tokens in part]

    def _sample_batch(self, requests: list[Request]) -> list[list[int]]:
        tf = self.tf
        if not requests:
            return []
        primers = [list(r.primer[-MAX_PRIMER_TOKENS:]) for r in requests]
        # The primer must begin a stream: keep <start> first when a long seed was cut.
        primers = [p if p[0] == self.vocab.start else [self.vocab.start, *p] for p in primers]
        plen = np.array([len(p) for p in primers], np.int32)
        width = int(plen.max())
        steps = int(max(len(p) + r.length * TOKENS_PER_EVENT_CAP for p, r in zip(primers, requests)))
        # Round the shapes up, so a server sees few distinct shapes and reuses the traced graph.
        width = 1 << max(4, (width - 1).bit_length())
        steps = 1 << max(8, (steps - 1).bit_length())
        padded = np.zeros((len(requests), width), np.int32)
        for i, p in enumerate(primers):
            padded[i, : len(p)] = p
        uniforms = np.stack(
            [np.random.default_rng(r.rng_seed).random(steps, dtype=np.float32) for r in requests]
        )
        t0 = time.perf_counter()
        tokens, used = self._loop(
            tf.constant(padded),
            tf.constant(plen),
            tf.constant([r.length for r in requests], tf.int32),
            tf.constant([r.temperature for r in requests], tf.float32),
            tf.constant([r.top_p for r in requests], tf.float32),
            tf.constant(uniforms),
            steps,
        )
        tokens, used = tokens.numpy(), used.numpy()
        log.debug("sampled %d requests in %.3f s", len(requests), time.perf_counter() - t0)
        return [tokens[i, plen[i] : used[i]].tolist() for i in range(len(requests))]
