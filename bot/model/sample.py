"""The sampler: many requests at once, the LSTM state carried from token to token, one compiled graph.

The tutorial called `model.predict` on a 100-token window once per note and took the argmax: a Python
round trip and 100 LSTM steps for every note, and a tendency to repeat one note for ever. Here the whole
generation is one compiled loop (`keras.ops.while_loop`, compiled by `backend.py` for TensorFlow or
JAX): each step feeds one token per request through the LSTM cells, keeping
their state, so a note costs a few cell steps (one per token) and no Python at all.

One loop does both priming and sampling. While a request is still inside its primer (the `<start>` token
and the tokens of its seed) the next input is the primer's next token; after that it is drawn from the
network's distribution mixed with the piece's own short-term model (`bot.model.short_term`), sharpened
by `temperature`, cut to the `top_p` nucleus and restricted by the token grammar. Every request has its own uniform random numbers, drawn from its own RNG seed before the loop, so
its result does not depend on which other requests share the batch.

The loop also follows what a listener follows: the pitches of the frame being written and of the last
onset, the chords they spell and a pitch-class histogram. From these the rules of `bot.model.masks` end a
piece on a cadence onto the tonic (V or IV, then a root-position tonic triad, steered into as the margin
past `length` runs out) and leave out pitches that would move in parallel fifths or octaves with a lower
voice; this module keeps the network's step and the sampling from what the rules allow, and
`bot.model.loop_state` the book-keeping that carries the state from one step to the next.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bot.errors import BadOption
from bot.model import backend, conditioning
from bot.model.conditioning import STATISTICS
from bot.model.form import BARS, FERMATAS, plan_uniforms
from bot.model.loop_state import Book, Loop
from bot.model.masks import MAX_CHORD, MAX_QUIET, MAX_SHIFT_CHAIN, Masks, token_kinds, token_pitches
from bot.model.network import LoadedModel
from bot.model.short_term import WEIGHT as SHORT_TERM_WEIGHT
from bot.model.short_term import ShortTerm
from bot.music.analysis import chord_table
from bot.music.events import GRID
from bot.music.meter import GRIDS, meter_ids
from bot.options import SPECS, cadence_margin

log = logging.getLogger(__name__)

MAX_PRIMER_TOKENS = 768  # how much of a long seed warms the state; the LSTM's memory is shorter anyway
PRIMER_WIDTH = 1024  # primers are padded to this width: one compiled shape (the <start> token may be added)
MIN_SHARD = 4  # smallest batch worth a thread of its own on a CPU
# Upper bound on the tokens of one onset (the quiet frames before it and its own), to size the buffer.
TOKENS_PER_ONSET_CAP = (1 + MAX_QUIET) * (MAX_SHIFT_CHAIN + MAX_CHORD + 1)


def check_sampling(length: int, temperature: float, top_p: float) -> None:
    """Raise `BadOption` for a length, temperature or top-p the sampler does not take."""
    SPECS["length"].check(length)
    if temperature is None:
        raise BadOption("a request needs a temperature")
    SPECS["temperature"].check(temperature)
    SPECS["top_p"].check(top_p)


@dataclass(frozen=True)
class Request:
    """One piece to sample: `length` notes and chords (onsets) after `primer` (token ids, from `<start>`),
    then as many more as the model takes to end the piece, at most `cadence_margin(length)`."""

    primer: tuple[int, ...]
    length: int = 500
    temperature: float = 1.0
    top_p: float = 0.95
    rng_seed: int = 0
    grid: int = 0  # steps: the onsets' grid to keep (6 eighths, 3 sixteenths), 0 for none
    phase: int = 0  # steps from the last beat to the primer's last frame, where the clock starts
    short_term: float = SHORT_TERM_WEIGHT  # the short-term model's weight in the mixture, 0 for none
    bar: int = 4 * GRID  # steps per bar (the seed's meter)
    bar_pos: int = 0  # steps from the last downbeat to the primer's last frame (0: a piece from nothing)
    form: int = 0  # the plan by which earlier phrases come back (`bot.model.form`: FERMATAS, BARS; 0 none)
    # The seed's statistics for a network told them (`bot.model.conditioning`); empty: not told.
    stats: tuple[float, ...] = ()

    def check(self) -> None:
        check_sampling(self.length, self.temperature, self.top_p)
        if not self.primer:
            raise BadOption("a request needs a primer (at least the start token)")
        if self.grid not in (0, *GRIDS) or not 0 <= self.phase < GRID:
            raise BadOption(f"a request's grid must be one of 0, {GRIDS} and its phase in 0-{GRID - 1}")
        if not 0.0 <= self.short_term <= 1.0:
            raise BadOption("a request's short-term weight must be in 0-1")
        if not (0 < self.bar <= 32 * 4 * GRID and 0 <= self.bar_pos < self.bar):
            raise BadOption("a request's bar must be 1 to 4,608 steps and its position inside it")
        if self.form not in (0, FERMATAS, BARS):
            raise BadOption(f"a request's plan must be 0, {FERMATAS} or {BARS}")
        if len(self.stats) not in (0, STATISTICS):
            raise BadOption(f"a request's statistics must be {STATISTICS} numbers, or none")


class Sampler:
    """Compiles the sampling loop for one loaded model; `sample()` serves any batch of requests.

    The loop is written in `keras.ops` and compiled by `backend.compile_loop` for the backend in use;
    the weights are read out of the Keras model once and handed to the compiled loop as arrays.
    """

    def __init__(self, model: LoadedModel):
        k = backend.keras()
        self.ops = k.ops
        self.model = model
        self.vocab = v = model.vocab
        net, cfg = model.net, model.config
        self.cells = cells = [net.get_layer(f"lstm_{i}").cell for i in range(cfg.layers)]
        self.activations = [(c.activation, c.recurrent_activation) for c in cells]
        self.hidden = cfg.hidden
        self.scale = float(len(v))
        # The embedding and the head run as the model's own layers, called statelessly on these weights.
        self.embed = net.get_layer("embed") if cfg.input_mode == "embedding" else None
        self.meter_embed = net.get_layer("meter_embed") if cfg.meter_input else None
        last_lstm = net.layers.index(net.get_layer(f"lstm_{cfg.layers - 1}"))
        self.head = [
            layer for layer in net.layers[last_lstm + 1 :] if not layer.name.startswith(("drop", "head_drop"))
        ]
        # `training=False` (batch norm on its moving averages) for the layers whose call takes it.
        self.head_kwargs = [
            {"training": False} if "training" in inspect.signature(layer.call).parameters else {}
            for layer in self.head
        ]
        self._loop = backend.compile_loop(self._generate, self._params())
        self.on_gpu = backend.accelerator() is not None
        # A CPU batch is cut into one shard per thread the backend computes on (`backend.serving`): on a
        # single thread shards would only wait for each other.
        self.threads = backend.compute_threads()

    def reload(self) -> None:
        """Hand the compiled loop the network's weights as they are now (after `set_weights`), without
        compiling it again: the shapes are the same."""
        self._loop.reload(self._params())

    def _params(self) -> dict:
        """The network's weights as the loop reads them, with the vocabulary's tables."""
        v, cfg, cells = self.vocab, self.model.config, self.cells
        # One matrix per layer for [input, state] -> gates: a single matmul per layer and step. Keras's own
        # cell makes eight when the layer was trained with recurrent dropout, as the tutorial's was.
        lstm = [
            (
                np.concatenate([_array(c.kernel), _array(c.recurrent_kernel)], 0),
                _array(c.bias) if c.use_bias else np.zeros(4 * c.units, np.float32),
            )
            for c in cells
        ]
        # An embedded token (and its metrical id) enters the network only through the first layer's input
        # weights, so their products are tables read once a step instead of a matrix product: the first
        # layer then multiplies its state alone.
        tables = {}
        if self.embed is not None:
            kernel, d = _array(cells[0].kernel), cfg.embed_dim
            tables["token_gates"] = (_array(self.embed.embeddings) @ kernel[:d]).astype(np.float32)
            if self.meter_embed is not None:
                meter_kernel = kernel[d : d + cfg.meter_dim]
                tables["meter_gates"] = (_array(self.meter_embed.embeddings) @ meter_kernel).astype(
                    np.float32
                )
            if cfg.stats_input:  # a request's statistics are the same at every step: their gates too
                rows = d + cfg.meter_dim  # the kernel's rows for the statistics follow the meter's
                tables["stats_gates"] = kernel[rows : rows + STATISTICS].astype(np.float32)
            lstm[0] = (_array(cells[0].recurrent_kernel).astype(np.float32), lstm[0][1])
        params = {
            "lstm": lstm,
            **tables,
            "head": [_weights(layer) for layer in self.head],
            "allowed": v.grammar(),
            "kinds": token_kinds(v),
            "attack": np.array([v.is_attack(t) for t in range(len(v))]),
            "hold": np.array([v.is_hold(t) for t in range(len(v))]),
            "pitch": token_pitches(v),
            "steps": v.shift_table().copy(),
            "chords": chord_table(),
        }
        return params

    # -- one step of the network ------------------------------------------------------------------------
    def _logits(self, params, tokens, bar_pos, bars, states, told=None):
        ops = self.ops
        first = x = None
        if self.embed is not None:  # the first layer's input gates, read from the tables
            first = ops.take(params["token_gates"], tokens, axis=0)
            if told is not None:
                first = first + told
            if self.meter_embed is not None:
                ids = meter_ids(bar_pos, bars, minimum=ops.minimum)
                first = first + ops.take(params["meter_gates"], ids, axis=0)
        else:  # the tutorial's input: the token index divided by the vocabulary size
            x = ops.cast(tokens, "float32")[:, None] / self.scale
        new_states = []
        for (w, b), (act, gate), (h, c) in zip(params["lstm"], self.activations, states):
            if first is not None:
                z, first = first + ops.matmul(h, w) + b, None
            else:
                z = ops.matmul(ops.concatenate([x, h], 1), w) + b
            i, f, g, o = ops.split(z, 4, axis=1)  # Keras's gate order
            c = gate(f) * c + gate(i) * act(g)
            h = gate(o) * act(c)
            x = h
            new_states.append((h, c))
        for layer, weights, kwargs in zip(self.head, params["head"], self.head_kwargs):
            x, _ = layer.stateless_call(*weights, x, **kwargs)
        return ops.cast(x, "float32"), new_states

    # -- the loop, compiled once per batch shape ----------------------------------------------------------
    def _generate(
        self,
        params,
        primers,
        primer_len,
        lengths,
        limits,
        temperature,
        top_p,
        grids,
        phases,
        weights,
        bars,
        bar_starts,
        forms,
        plans,
        stats,
        uniforms,
        max_steps,
    ):
        """Sample a batch.

        primers (B, P) int32, right-padded; primer_len (B,); lengths (B,) onsets to add before the model may
        end the piece, limits (B,) the most onsets it may add before it must end; temperature, top_p
        (B,) float32; grids, phases (B,) int32 (`Request.grid`, `Request.phase`); weights (B,) float32 the
        short-term model's (`Request.short_term`); bars, bar_starts (B,) int32 steps per bar and where in
        its bar each primer's time begins; forms (B,) int32 `Request.form`, plans (B, PLAN_PHRASES) float32 the
        numbers its plan draws (`form.plan_uniforms`); stats (B, STATISTICS) float32 `Request.stats` (zeros where
        not told); uniforms (B, S) float32 in [0, 1); max_steps = S, a
        Python int (a static size for the compiler). Returns tokens (B, S) int32: the whole stream, primer included, and the number of
        steps each request took (B,).
        """
        ops = self.ops
        v = len(self.vocab)
        kinds = params["kinds"]
        rules = Masks(ops, self.vocab, params, primers, primer_len)
        book = Book(ops, self.vocab, params)
        short_term = ShortTerm(ops, v, kinds == 3)
        form = book.form

        told = ops.matmul(stats, params["stats_gates"]) if "stats_gates" in params else None

        def body(s: Loop) -> tuple[Loop]:
            logits, states = self._logits(params, s.tok, s.bar_pos, s.bars, s.states, told)
            # The piece so far's own model, mixed in before any rule: the rules still decide what may come.
            # Each only where some row uses it: a batch without a seed skips the short-term model, and one
            # where no phrase is returning skips the copy (a conditional, not a mask: it is not computed).
            # What they read of the stream is taken first, so the conditional holds that, not the stream.
            context = short_term.context(s.out, s.t)
            logits = ops.cond(
                ops.any(weights > 0), lambda: short_term.mix(logits, context, s.t, weights), lambda: logits
            )
            # A phrase that returns copies the earlier one. The token offered leaves the conditional as
            # its output (-1 where no phrase returns), so nothing after the draw reads the stream: the
            # compiler then writes each token into the stream in place instead of copying it every step.
            copied = form.copied(s.out, s.ptr)
            logits, copied = ops.cond(
                ops.any(s.ptr >= 0),
                lambda: (form.mix(logits, copied, s.ptr, temperature), copied),
                lambda: (logits, ops.full_like(copied, -1)),
            )
            kind = ops.take(kinds, s.tok)
            minor, tonic, tok_rel = rules.key(s, limits)
            ok = rules.grammar(s, kind)
            ok = rules.on_grid(ok, s, grids)
            ok = rules.shifts_within(ok, form.steps_to_group(s, forms))
            spelt = rules.frame(s, tonic, minor)
            ok, left = rules.ending(ok, s, kind, lengths, limits, spelt.final)
            # A phrase that has run long is steered to its cadence as the piece's end is (two onsets
            # left), and its tonic closed by a fermata.
            due = form.due(s, forms)
            ok = rules.steer_cadence(
                ok, s, ops.where(due, ops.minimum(left, 2), left), tonic, minor, tok_rel, spelt.rel
            )
            ok = rules.phrase_end(ok, due & spelt.final)
            ok, scaled = rules.voice_leading(ok, s, spelt.in_frame, logits / temperature[:, None])

            scaled = ops.where(ok, scaled, -1e9)
            probs = ops.softmax(scaled, axis=-1)
            sampled = _nucleus(ops, probs, top_p, ops.take(uniforms, s.t, axis=1))
            # Inside the primer the next token is given; done requests repeat <pad>.
            in_primer = s.t + 1 < primer_len
            given = ops.take(primers, ops.minimum(s.t + 1, ops.shape(primers)[1] - 1), axis=1)
            nxt = ops.where(in_primer, given, sampled)
            nxt = ops.where(s.done, 0, nxt)
            return (
                book.advance(
                    s, nxt, kind, in_primer, states, spelt.chord, spelt.final, minor, forms, plans, copied
                ),
            )

        def cond(s: Loop):
            return (s.t + 1 < max_steps) & ~ops.all(s.done)

        start = book.start(
            primers,
            max_steps,
            self.hidden,
            len(self.activations),
            rules.asked_minor,
            phases,
            bars,
            bar_starts,
        )
        (end,) = ops.while_loop(cond, body, (start,), maximum_iterations=max_steps - 1)
        return end.out, end.steps

    # -- the public call ------------------------------------------------------------------------------------------
    def sample(self, requests: list[Request]) -> list[list[int]]:
        """The new tokens of each request (without its primer), each ending with `<end>` (unless its buffer
        ran out first, which the caps make all but impossible).

        On a CPU computing on several threads a large batch is cut into one shard per thread, sampled side
        by side: two half batches on two threads do about 1.8 times the work of one whole batch. Each
        request's result is the same in any shard.
        """
        for r in requests:
            r.check()
        shards = 1 if self.on_gpu else max(1, min(self.threads, len(requests) // MIN_SHARD))
        if shards == 1:
            return self._sample_batch(requests)
        size = -(-len(requests) // shards)
        parts = [requests[i : i + size] for i in range(0, len(requests), size)]
        with ThreadPoolExecutor(len(parts)) as pool:
            return [tokens for part in pool.map(self._sample_batch, parts) for tokens in part]

    def _sample_batch(self, requests: list[Request]) -> list[list[int]]:
        if not requests:
            return []
        primers = [list(r.primer[-MAX_PRIMER_TOKENS:]) for r in requests]
        # The primer must begin a stream: keep <start> first when a long seed was cut.
        primers = [p if p[0] == self.vocab.start else [self.vocab.start, *p] for p in primers]
        plen = np.array([len(p) for p in primers], np.int32)
        # Few distinct shapes, so a server reuses the compiled loop: every primer is padded to the longest
        # one kept (the loop reads a primer only as far as its length) and the steps are sized by the
        # lengths alone, rounded up to a power of two. A seed then compiles no shape of its own: a worker
        # warmed without one is warm for seeds too.
        steps = PRIMER_WIDTH + max(
            (cadence_margin(r.length) + r.length + 1) * TOKENS_PER_ONSET_CAP for r in requests
        )
        steps = 1 << max(8, (steps - 1).bit_length())
        padded = np.zeros((len(requests), PRIMER_WIDTH), np.int32)
        for i, p in enumerate(primers):
            padded[i, : len(p)] = p
        uniforms = draw_uniforms([r.rng_seed for r in requests], steps)
        bar_starts = primer_bar_starts(self.vocab, requests, primers)
        t0 = time.perf_counter()
        tokens, used = self._loop(
            padded,
            plen,
            np.array([r.length for r in requests], np.int32),
            np.array([r.length + cadence_margin(r.length) for r in requests], np.int32),
            np.array([r.temperature for r in requests], np.float32),
            np.array([r.top_p for r in requests], np.float32),
            np.array([r.grid for r in requests], np.int32),
            np.array([r.phase for r in requests], np.int32),
            np.array([r.short_term for r in requests], np.float32),
            np.array([r.bar for r in requests], np.int32),
            np.array(bar_starts, np.int32),
            np.array([int(r.form) for r in requests], np.int32),
            plan_uniforms([r.rng_seed for r in requests]),
            np.concatenate([conditioning.told(r.stats, 1) for r in requests]),
            uniforms,
            steps,
        )
        log.debug("sampled %d requests in %.3f s", len(requests), time.perf_counter() - t0)
        return [tokens[i, plen[i] : used[i]].tolist() for i in range(len(requests))]


def _nucleus(ops, probs, top_p, u):
    """The token drawn by `u` (B,) in [0, 1) from the nucleus of `probs` (B, V): the likeliest tokens
    whose mass reaches `top_p` (always at least one), renormalised, read from the likeliest down.

    Where each token stands in that order is counted, not sorted for: the mass ranked before a token is
    the sum over the tokens likelier than it (ties in index order). On a CPU these V x V comparisons,
    fused into one pass, take a third of a sort's time, whose comparisons are calls.
    """
    ids = ops.arange(ops.shape(probs)[1], dtype="int32")
    p_i, p_j = probs[:, :, None], probs[:, None, :]
    ahead = (p_j > p_i) | ((p_j == p_i) & (ids[None, None, :] < ids[None, :, None]))
    before = ops.sum(ops.where(ahead, p_j, 0.0), axis=2)  # (B, V) the mass ranked before each token
    kept = (before < top_p[:, None]) & (probs > 0)
    x = u * ops.sum(ops.where(kept, probs, 0.0), axis=1)
    # The token whose share [before, before + p) holds x: the last kept one with no more than x before it.
    # The likeliest has nothing before it, so there is always one.
    return ops.cast(ops.argmax(ops.where(kept & (before <= x[:, None]), before, -1.0), axis=1), "int32")


def bar_start(vocab, primer, bar: int, bar_pos: int) -> int:
    """Where in its bar a primer's time begins (steps from the downbeat): back from its last frame, which
    lies `bar_pos` into a bar of `bar` steps, by the time the primer spans."""
    return (bar_pos - int(vocab.shift_table()[list(primer)].sum())) % bar


def primer_bar_starts(vocab, requests: list[Request], primers: list[list[int]]) -> list[int]:
    """`bar_start` of each request's primer as cut for the loop."""
    return [bar_start(vocab, p, r.bar, r.bar_pos) for r, p in zip(requests, primers)]


def draw_uniforms(seeds: list[int], steps: int) -> np.ndarray:
    """(len(seeds), steps) float32 uniforms in [0, 1), row i drawn by numpy from seeds[i] alone.

    numpy, not the backend's generator, so every backend samples with the same numbers. On a large
    batch this is real work on the host (a GPU batch of 4,096 needs 33 million numbers): rows are filled
    on several threads, as numpy's generators let go of the GIL while they fill an array.
    """
    out = np.empty((len(seeds), steps), np.float32)

    def fill(rows: range) -> None:
        for i in rows:
            np.random.default_rng(seeds[i]).random(dtype=np.float32, out=out[i])

    threads = min(os.cpu_count() or 1, len(seeds) // 64) or 1
    if threads == 1:
        fill(range(len(seeds)))
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, [range(i, len(seeds), threads) for i in range(threads)]))
    return out


def _array(w) -> np.ndarray:
    return np.asarray(w.numpy() if hasattr(w, "numpy") else w)


def _weights(layer) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A layer's trainable and non-trainable weights as arrays, in the order `stateless_call` takes them."""
    return [_array(w) for w in layer.trainable_variables], [_array(w) for w in layer.non_trainable_variables]
