"""The style a piece is written in: asked for, fitted to the seed by the network, or the default."""

from __future__ import annotations

import numpy as np
import pytest

from bot.errors import BadOption
from bot.model.styles import default_style, known_styles, offered_styles, seed_losses
from bot.music.events import Event
from bot.music.midi_out import midi_bytes
from bot.options import STYLES, Options

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def shipped():
    from bot.model.composer import Composer

    return Composer()  # models/etude-chorales


def test_the_shipped_model_knows_the_offered_styles(shipped):
    assert known_styles(shipped.model) == ("chorale", "folk", "renaissance", "classical")  # most pieces first
    assert offered_styles(shipped.model) == ("chorale", "renaissance", "classical") == STYLES
    assert default_style(shipped.model) == "chorale"
    assert shipped.style(Options(rng_seed=1), None) == ("chorale", "default")


def test_a_style_heard_too_faintly_to_write_is_neither_offered_nor_fitted(shipped, chorales):
    """The shipped model heard folk tunes but writes four parts under their token: a tune of one line is
    fitted to an offered style, and folk cannot be asked for."""
    tune = [Event(e.onset, e.duration, (max(e.pitches),)) for e in chorales[3].events[:40]]  # a top line
    seed = shipped.seed(midi_bytes(tune), "tune")
    style, source = shipped.style(Options(rng_seed=1), seed)
    assert source == "seed" and style in STYLES and set(seed.meta["style_losses"]) == set(STYLES)
    with pytest.raises(BadOption, match="style must be one of: chorale, renaissance, classical"):
        Options(style="folk").check()


def test_a_chorale_seed_is_continued_as_a_chorale_and_the_reply_says_so(shipped, chorales):
    seed = shipped.seed(midi_bytes(chorales[0].events[:60]), "chorale")
    style, source = shipped.style(Options(rng_seed=1), seed)
    losses = seed.meta["style_losses"]
    assert (style, source) == ("chorale", "seed") and set(losses) == set(STYLES)
    assert min(losses, key=losses.get) == "chorale"
    piece = shipped.compose_one(Options(length=12, rng_seed=1), seed)
    assert (piece.style, piece.style_source) == ("chorale", "seed")
    assert "written as chorale, the style that fits the seed best" in piece.said


def test_a_style_asked_for_opens_the_primer_and_is_not_fitted(shipped, chorales):
    seed = shipped.seed(midi_bytes(chorales[1].events[:30]), "chorale")
    options = Options(length=12, rng_seed=2, style="classical")
    assert shipped.style(options, seed) == ("classical", "asked") and "style_losses" not in seed.meta
    primer = shipped.plan(options, seed, "classical")[2]
    assert primer[1] == shipped.vocab.style_id("classical")
    piece = shipped.compose_one(options, seed)
    assert (piece.style, piece.style_source) == ("classical", "asked") and not any(
        "style" in s for s in piece.said
    )
    assert shipped.compose_one(options, seed).midi() == piece.midi()


def test_the_stepped_losses_are_the_networks_own(shipped, chorales):
    """The NumPy steps score the seed as the Keras network does over the whole sequence, in its meter."""
    seed = shipped.seed(midi_bytes(chorales[2].events[:12]), "chorale")
    primer = shipped.plan(Options(rng_seed=1), seed, "renaissance")[2]
    logits = np.asarray(
        shipped.model.net(
            shipped.model.inputs(np.array([primer[:-1]], np.int32), [seed.meter]), training=False
        ),
        np.float64,
    )[0]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -np.mean([logp[i, primer[i + 1]] for i in range(2, len(primer) - 1)])
    assert seed_losses(shipped.model, primer, ["renaissance"], seed.meter)["renaissance"] == pytest.approx(
        expected, rel=1e-4
    )


def test_a_model_refuses_a_style_it_never_learnt(composer):
    # The small test model learnt from a folder of MIDI files: every piece opened with <other>.
    assert known_styles(composer.model) == ("other",) and default_style(composer.model) == "other"
    with pytest.raises(BadOption, match="has not learnt the renaissance style; it knows other"):
        composer.compose_one(Options(length=8, rng_seed=1, style="renaissance"))
