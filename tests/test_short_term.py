"""The short-term model: what a piece's own past predicts, the compiled version against the plain one, and
the seed too short to learn from."""

from __future__ import annotations

import numpy as np
import pytest

from bot.model import backend
from bot.model.short_term import FALLBACK_NOTE, MIN_SEED_ONSETS, ShortTerm, mix, short_term_reference

pytestmark = pytest.mark.timeout(300)
V = 12


def compiled(history: list[int], orders: int, window: int, width: int = 64) -> tuple[np.ndarray, float]:
    """`ShortTerm.distribution` run eagerly on one row: `history` at the start of a zero-padded stream."""
    ops = backend.keras().ops
    out = np.zeros((1, width), np.int32)
    out[0, : len(history)] = history
    probs, confidence = ShortTerm(ops, V, np.arange(V) >= V - 2, orders, window).distribution(
        ops.convert_to_tensor(out), ops.convert_to_tensor(len(history) - 1, "int32")
    )
    return np.asarray(probs)[0], float(np.asarray(confidence)[0])


def test_a_repeated_pattern_predicts_its_continuation():
    pattern = [3, 5, 7, 9, 4]
    probs, confidence = short_term_reference(pattern * 2 + pattern[:2], V)
    assert probs.argmax() == 7  # after "3 5" came 7, twice
    assert probs[7] > 0.8
    assert 0.5 < confidence <= 1.0
    # A longer shared context is surer than a shorter one.
    _, shorter = short_term_reference([1, 2, 3, 1, 2], V)
    _, longer = short_term_reference([8, 1, 2, 3, 8, 1, 2], V)
    assert longer > shorter


def test_no_earlier_match_gives_the_uniform_distribution_and_no_confidence():
    probs, confidence = short_term_reference([1, 2, 3, 4, 5], V)
    assert np.allclose(probs, 1 / V)
    assert confidence == pytest.approx(0.0, abs=1e-9)
    # The mixture then is the network's own distribution.
    network = np.linspace(1, 2, V) / np.linspace(1, 2, V).sum()
    closes = np.arange(V) >= V - 2
    assert np.allclose(mix(network, probs, confidence, closes), network)
    # Only what lies inside the window counts: the repeat of 1 2 is further back than 3 tokens.
    probs, confidence = short_term_reference([1, 2, 6, 7, 8, 1, 2], V, window=3)
    assert np.allclose(probs, 1 / V) and confidence == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("orders", "window"), [(4, 16), (8, 40)])
def test_the_compiled_model_gives_the_reference_numbers(orders, window):
    rng = np.random.default_rng(0)
    # A stream with returns: a motif, variations of it and noise, longer than the window.
    motif = [1, 4, 6, 4, 2, 11]
    history = []
    for _ in range(8):
        history += motif if rng.random() < 0.6 else list(rng.integers(0, V, 4))
    for t in range(1, len(history) + 1):
        want_p, want_c = short_term_reference(history[:t], V, orders, window)
        got_p, got_c = compiled(history[:t], orders, window)
        np.testing.assert_allclose(got_p, want_p, rtol=1e-5, atol=1e-6)
        assert got_c == pytest.approx(want_c, abs=1e-5)


def test_a_seed_too_short_falls_back_to_the_network_and_says_so():
    from bot.model.composer import Composer
    from bot.music.events import Event
    from bot.music.midi_out import midi_bytes
    from bot.options import Options

    composer = Composer()
    short = [Event(float(i), 1.0, (60 + 2 * i,)) for i in range(MIN_SEED_ONSETS - 1)]
    piece = composer.compose_one(Options(length=12, rng_seed=4), composer.seed(midi_bytes(short), "short"))
    assert FALLBACK_NOTE in piece.said
    assert "network alone" in FALLBACK_NOTE
    long = [Event(float(i), 1.0, (60 + 2 * (i % 4),)) for i in range(2 * MIN_SEED_ONSETS)]
    piece = composer.compose_one(Options(length=12, rng_seed=4), composer.seed(midi_bytes(long), "long"))
    assert FALLBACK_NOTE not in piece.said
    assert FALLBACK_NOTE not in composer.compose_one(Options(length=12, rng_seed=4)).said


def test_the_compiled_mixture_gives_the_reference_distribution():
    ops = backend.keras().ops
    history = [1, 4, 6, 10, 2, 5, 1, 4, 6, 11, 2, 5, 1, 4]
    closes = np.arange(V) >= V - 2
    logits = np.linspace(-2.0, 1.0, V).astype(np.float32)
    network = np.exp(logits) / np.exp(logits).sum()
    short, confidence = short_term_reference(history, V, 4, 16)
    want = mix(network, short, confidence, closes, weight=0.85)
    # Fermatas keep the network's share of the closing bars: the piece's past does not choose them.
    assert want[V - 1] / want[V - 2] == pytest.approx(network[V - 1] / network[V - 2])
    out = np.zeros((1, 64), np.int32)
    out[0, : len(history)] = history
    model = ShortTerm(ops, V, closes, 4, 16)
    t = ops.convert_to_tensor(len(history) - 1, "int32")
    context = model.context(ops.convert_to_tensor(out), t)
    got = model.mix(
        ops.convert_to_tensor(logits[None, :]),
        context,
        t,
        ops.convert_to_tensor(np.array([0.85], np.float32)),
    )
    np.testing.assert_allclose(np.exp(np.asarray(got)[0]), want, rtol=1e-5, atol=1e-6)
    # At weight 0 a row keeps the network's logits as they were.
    same = model.mix(
        ops.convert_to_tensor(logits[None, :]), context, t, ops.convert_to_tensor(np.array([0.0], np.float32))
    )
    np.testing.assert_array_equal(np.asarray(same)[0], logits)
