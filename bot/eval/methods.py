"""Ways to make a continuation listen to its seed, measured against each other on the fidelity seeds.

- **network alone**: the seed is only the network's context;
- **short-term model** (what the product does): the network mixed with a model learned from the seed and
  the piece so far (`bot.model.short_term`);
- **dynamic evaluation**: a few gradient steps on the seed's own tokens before sampling (Krause et al.
  2018), the network alone afterwards;
- **both**: the adapted network mixed with the short-term model.

A network trained told each piece's statistics (`bot.model.conditioning`, as Performance RNN is) is
measured instead with and without the seed's (`STATS_METHODS`): the third way, beside the short-term model.

Dynamic evaluation changes the weights for one request, so it is run here one seed at a time at batch 1
(the product's sampler serves a batch of requests with one set of weights). Its settings are fixed
beforehand, not tuned on these seeds: `STEPS` Adam steps at `RATE` over the whole seed (dropout on, as in
training), from the shipped weights each time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from bot.eval import fidelity as F
from bot.model import network as M
from bot.model.sample import MAX_PRIMER_TOKENS, bar_start
from bot.music.meter import Meter, stream_meter_ids

STEPS = 8
RATE = 3e-4
METHODS = ("network alone", "short-term model", "dynamic evaluation", "both")
STATS_METHODS = ("network alone", "seed statistics", "short-term model", "statistics + short-term")
_NO_SHORT_TERM = ("network alone", "dynamic evaluation", "seed statistics")


def seed_arrays(model: M.LoadedModel, primer: Sequence[int], meter: Meter, start: int):
    """(inputs, targets, weights) of one primer as training reads a piece: each token beside where its
    time stands in the bar once it is read (`start`: where the primer's time begins), padded to
    `MAX_PRIMER_TOKENS` (weight 0) so every seed trains through one compiled step."""
    tokens = np.asarray(primer, np.int32)[:MAX_PRIMER_TOKENS]
    n = len(tokens) - 1
    pad = np.zeros(MAX_PRIMER_TOKENS, np.int32)
    x, y, w = pad.copy(), pad.copy(), np.zeros(MAX_PRIMER_TOKENS, np.float32)
    x[:n], y[:n], w[:n] = tokens[:-1], tokens[1:], 1.0
    if not model.config.meter_input:
        return x[None], y[None], w[None]
    ids = pad.copy()
    ids[:n] = stream_meter_ids(model.vocab.shift_table()[tokens], meter, start)[:-1]
    return [x[None], ids[None]], y[None], w[None]


class Adapted:
    """Composes each job alone, after `steps` gradient steps on its seed, from the same weights each time."""

    def __init__(self, composer, steps: int = STEPS, rate: float = RATE):
        self.composer, self.steps, self.rate = composer, steps, rate
        m = composer.model
        self.original = m.net.get_weights()
        M.compile_model(m.net, replace(m.config, learning_rate=rate, optimizer="adam"))
        self.seconds: list[float] = []

    def __call__(self, jobs):
        out = []
        try:
            for options, seed in jobs:
                out.append(self.one(options, seed))
        finally:
            self.composer.model.net.set_weights(self.original)
            self.composer.sampler.reload()
        return out

    def one(self, options, seed):
        c, m = self.composer, self.composer.model
        options = options.check().with_rng_seed()
        # The style the seed fits best, chosen by the shipped weights, as the product would choose it.
        style, source = c.style(options, seed)
        if source == "seed":  # chosen now, not by the adapted network
            options = replace(options, style=style)
        _, _, primer, _, last_frame = c.plan(options, seed, style)
        t0 = time.perf_counter()
        m.net.set_weights(self.original)
        for v in m.net.optimizer.variables:  # a fresh Adam for every seed: no moments, step count 0
            if not v.path.endswith("learning_rate"):
                v.assign(np.zeros(v.shape, v.dtype))
        start = bar_start(m.vocab, primer, seed.meter.bar_steps, seed.meter.position(last_frame))
        x, y, w = seed_arrays(m, primer, seed.meter, start)
        m.net.fit(x, y, sample_weight=w, epochs=self.steps, batch_size=1, shuffle=False, verbose=0)
        c.sampler.reload()
        self.seconds.append(time.perf_counter() - t0)
        return c.compose([(options, seed)])[0]


def methods_section(composer, pieces, chorales, steps: int = STEPS, rate: float = RATE) -> dict:
    """Seed fidelity of each way (`METHODS`, or `STATS_METHODS` for a network told statistics) on the same
    seeds and RNG seeds."""
    t0 = time.monotonic()
    out = {}
    for method in STATS_METHODS if composer.model.config.stats_input else METHODS:
        composer.seed_short_term = 0.0 if method in _NO_SHORT_TERM else None
        composer.seed_statistics = method in ("seed statistics", "statistics + short-term")
        adapted = Adapted(composer, steps, rate) if method in ("dynamic evaluation", "both") else None
        try:
            section = F.fidelity_section(composer, pieces, chorales, compose=adapted)
        finally:
            composer.seed_short_term, composer.seed_statistics = None, True
        out[method] = {
            "groups": {
                name: {k: g[k] for k in ("seeds", "mean_fidelity", "grid_seeds", "grid_kept", "key_kept")}
                | {"fidelity": {f: v["fidelity"] for f, v in g["features"].items()}}
                for name, g in section["groups"].items()
            },
            "adapt_seconds": round(float(np.median(adapted.seconds)), 3)
            if adapted and adapted.seconds
            else None,
        }
    return {"methods": out, "steps": steps, "rate": rate, "seconds": round(time.monotonic() - t0, 1)}


def methods_table(section: dict) -> str:
    methods = section["methods"]
    groups = list(next(iter(methods.values()))["groups"])
    adapting = "dynamic evaluation" in methods
    how = f"; dynamic evaluation = {section['steps']} Adam steps at {section['rate']:g} on the seed"
    lines = [
        "ways to listen to the seed: mean seed fidelity (1: as close as the real next part, 0: as a "
        "chorale)" + (how if adapting else "; seed statistics = the network told the seed's"),
        f"{'':22}" + "".join(f"{g:>18}" for g in groups) + f"{'adapting (median)':>20}",
    ]
    for name, m in methods.items():
        cells = []
        for g in groups:
            r = m["groups"][g]
            f = "—" if r["mean_fidelity"] is None else f"{r['mean_fidelity']:.2f}"
            cells.append(f"{f} (grid {r['grid_kept']}/{r['grid_seeds']})")
        took = "" if m["adapt_seconds"] is None else f"{m['adapt_seconds']:.2f} s"
        lines.append(f"{name:22}" + "".join(f"{c:>18}" for c in cells) + f"{took:>20}")
    return "\n".join(lines)
