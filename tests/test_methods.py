"""Ways to listen to the seed, as `etude eval --methods` measures them: the compiled loop takes new weights
without compiling again, dynamic evaluation trains on the seed as training reads a piece, and every seed
starts from the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from bot.eval.methods import Adapted, seed_arrays
from bot.model.composer import Composer
from bot.model.sample import MAX_PRIMER_TOKENS, bar_start
from bot.music.meter import Meter, stream_meter_ids
from bot.music.midi_out import midi_bytes
from bot.options import Options

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def own(tiny_model_dir):
    """A composer of its own: these tests change its weights for a while."""
    return Composer(tiny_model_dir)


def test_the_loop_takes_new_weights_without_compiling_again(own):
    opts = Options(length=40, rng_seed=11)
    before = own.compose([(opts, None)])[0].events
    traces = own.sampler._loop.traces()
    original = own.model.net.get_weights()
    rng = np.random.default_rng(0)
    own.model.net.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in original])
    own.sampler.reload()
    moved = own.compose([(opts, None)])[0].events
    own.model.net.set_weights(original)
    own.sampler.reload()
    again = own.compose([(opts, None)])[0].events
    assert own.sampler._loop.traces() == traces  # the same shapes: nothing compiled again
    assert moved != before and again == before


def test_the_seed_trains_as_training_reads_a_piece(own, chorales):
    seed = own.seed(midi_bytes(chorales[0].events[:40]), "chorale")
    style, _ = own.style(Options(), seed)
    _, _, primer, _, last = own.plan(Options(), seed, style)
    start = bar_start(own.vocab, primer, seed.meter.bar_steps, seed.meter.position(last))
    (x, ids), y, w = seed_arrays(own.model, primer, seed.meter, start)
    n = len(primer) - 1
    assert x.shape == y.shape == w.shape == (1, MAX_PRIMER_TOKENS)
    assert list(x[0, :n]) == list(primer[:-1]) and list(y[0, :n]) == list(primer[1:])
    assert w[0, :n].all() and not w[0, n:].any()
    # The metrical ids are the ones training gives a piece whose time begins at `start`.
    meter = Meter(seed.meter.numerator, seed.meter.denominator, 0.0, "file")
    shifted = Meter(meter.numerator, meter.denominator, -start / (meter.bar_steps / meter.bar), "file")
    expected = stream_meter_ids(own.vocab.shift_table()[np.asarray(primer)], shifted)
    assert shifted.position(0.0) == start
    assert list(ids[0, :n]) == list(expected[:-1])


def test_each_seed_adapts_from_the_shipped_weights_and_they_come_back(own, chorales):
    seeds = [own.seed(midi_bytes(p.events[:40]), p.name) for p in chorales[:2]]
    jobs = [(Options(length=30, rng_seed=5 + i), s) for i, s in enumerate(seeds)]
    plain = [c.events for c in own.compose(jobs)]
    original = [w.copy() for w in own.model.net.get_weights()]
    adapted = Adapted(own, steps=3, rate=1e-2)
    done = adapted(jobs)
    assert len(adapted.seconds) == 2 and len(done) == 2
    assert [c.events for c in done] != plain  # the steps moved the network
    assert all(np.array_equal(a, b) for a, b in zip(own.model.net.get_weights(), original))
    assert [c.events for c in own.compose(jobs)] == plain  # and the loop has the shipped weights again


def test_eval_methods_prints_one_row_per_way(monkeypatch, capsys):
    import bot.eval.listener_eval as LE
    from bot.cli import main
    from bot.eval.methods import METHODS

    group = {"seeds": 3, "mean_fidelity": 0.5, "grid_seeds": 2, "grid_kept": 2, "key_kept": 3, "fidelity": {}}
    section = {
        "methods": {
            m: {"groups": {"piano": group}, "adapt_seconds": 1.5 if "dyn" in m else None} for m in METHODS
        },
        "steps": 8,
        "rate": 3e-4,
        "seconds": 1.0,
    }
    monkeypatch.setattr(LE, "evaluate_methods", lambda *a, **k: {"model": "m", "methods": section})
    assert main(["eval", "--model", "x", "--methods"]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in METHODS) and "0.50 (grid 2/2)" in out and "1.50 s" in out
