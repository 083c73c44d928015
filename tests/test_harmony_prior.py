"""The harmony prior: learned from the training chorales only, and it steers the voices the network writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bot.model.harmonize import harmonize_line
from bot.model.harmony_prior import (
    NONE,
    HarmonyPrior,
    beat,
    build,
    chorale_soprano,
    melody_features,
    shipped,
    strength,
)
from bot.model.steps import NumpySteps
from bot.music.corpus import chorale_parts, corpus_works, is_validation
from bot.music.events import Event
from bot.music.meter import Meter

pytestmark = pytest.mark.timeout(300)

# A soprano line in C major: quarters, with a half note at the end.
LINE = [60, 62, 64, 65, 67, 65, 64, 62, 60]


FOUR = Meter(4, 4, 0.0)  # the line's bars: 4/4 from its first note


def notes() -> list[Event]:
    return [Event(float(i), 2.0 if i == len(LINE) - 1 else 1.0, (p,)) for i, p in enumerate(LINE)]


def test_the_shipped_prior_was_learned_from_the_training_chorales_and_no_validation_one():
    prior = shipped()
    assert prior is not None
    names = {str(n) for n in prior.pieces}
    every = {Path(w).stem for w in corpus_works("chorales")}
    training = {n for n in every if not is_validation(n)}
    assert names <= training and len(names) == len(prior.pieces)
    # All but those that are not in four parts.
    assert len(names) > 0.9 * len(training)


def test_building_the_prior_reads_training_chorales_and_is_reproducible(tmp_path):
    a = build(tmp_path / "a.npz", limit=3)
    build(tmp_path / "b.npz", limit=3)
    b = HarmonyPrior.load(tmp_path / "b.npz")
    assert len(a.pieces) == 3 and not any(is_validation(str(n)) for n in a.pieces)
    assert (
        (a.names == b.names).all()
        and np.array_equal(a.weights, b.weights)
        and np.array_equal(a.inner, b.inner)
    )
    tables = b.tables(notes(), minor=False, meter=FOUR)
    assert tables[0].shape == (len(LINE), NONE + 1, 12) and tables[1].shape == (len(LINE), 12, NONE + 1, 12)
    # Log-probabilities: each row sums to one.
    assert np.allclose(np.exp(tables[0]).sum(-1), 1) and np.allclose(np.exp(tables[1]).sum(-1), 1)


def test_a_training_chorale_is_read_in_its_scores_meter():
    for chorale in chorale_parts(validation=False, limit=3):
        melody, _, _ = chorale_soprano(*chorale)
        # The score's time signature and bars, on the melody's clock; not the meter its onsets suggest.
        assert chorale.meter is not None and melody.meter.source == "file"
        assert melody.meter == chorale.meter.moved(-melody.meta["quarters_dropped"])


def test_downbeats_and_beats_are_the_melodys_meters():
    onsets = [0.0, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    # 3/4 with a one-beat pickup: the downbeats are 1, 4 and 7, not 0, 4 and 8 as in 4/4 from the start.
    waltz = [strength(t, Meter(3, 4, 1.0)) for t in onsets]
    assert [t for t, s in zip(onsets, waltz) if s == 0] == [1.0, 4.0, 7.0]
    assert waltz == [1, 0, 2, 1, 1, 0, 1, 1, 0, 1]
    assert [t for t in onsets if strength(t, FOUR) == 0] == [0.0, 4.0, 8.0]
    # A compound meter's beat is three eighths: in 6/8 the second beat is 1.5 quarters into the bar.
    assert beat(Meter(6, 8)) == 1.5 and beat(Meter(3, 8)) == 0.5 and beat(Meter(3, 2)) == 1.0
    assert [strength(t, Meter(6, 8)) for t in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)] == [0, 2, 2, 1, 2, 0]


def downbeat_prior() -> HarmonyPrior:
    """A prior sure that the bass sounds C on a downbeat and G on any other onset, whatever the soprano."""
    names = [f"Ms{s}t{t}" for s in range(12) for t in range(3)]
    weights = np.zeros((len(names), 12), np.float32)
    for i, name in enumerate(names):
        weights[i, 0 if name.endswith("t0") else 7] = 30.0
    return HarmonyPrior(np.array(names), weights, np.zeros((2, 12, 12, NONE + 1, 12)), np.array([]))


def test_a_three_four_melodys_bass_follows_its_bars():
    line = [Event(float(i), 1.0, (p,)) for i, p in enumerate([67, 72, 76, 74, 71, 72, 69, 67, 72])]
    waltz = Meter(3, 4, 1.0)
    assert melody_features(line, False, waltz) != melody_features(line, False, FOUR)
    prior = downbeat_prior()
    assert prior.best_line(line, False, waltz) == [7, 0, 7, 7, 0, 7, 7, 0, 7]
    assert prior.best_line(line, False, FOUR) == [0, 7, 7, 7, 0, 7, 7, 7, 0]


def third_below() -> HarmonyPrior:
    """A prior sure that the bass lies a minor third under the soprano (in pitch class), whatever else."""
    weights = np.zeros((12, 12), np.float32)
    weights[np.arange(12), (np.arange(12) - 3) % 12] = 30.0
    return HarmonyPrior(
        np.array([f"Ms{s}" for s in range(12)]), weights, np.zeros((2, 12, 12, NONE + 1, 12)), np.array([])
    )


def test_the_prior_chooses_the_bass_where_the_network_alone_would_choose_otherwise(composer):
    model, vocab = composer.model, composer.vocab
    tables = third_below().tables(notes(), minor=False, meter=FOUR)
    wanted = [(p - 3) % 12 for p in LINE]

    def bass(prior, weight: float) -> list[int]:
        rng = np.random.default_rng(7)
        lower = harmonize_line(
            NumpySteps(model), vocab, notes(), "major", None, 1.0, rng, prior=prior, prior_weight=weight
        )
        assert (lower < np.array(LINE)[:, None]).all()  # still under the melody, whatever the prior says
        return [int(b) % 12 for b in lower[:, 0]]

    alone = bass(None, 0.0)
    assert alone != wanted
    assert bass(tables, 1.0) == wanted
    # The prior's weight is what sets its say: at zero the network alone chooses, with the same numbers.
    assert bass(tables, 0.0) == alone


def test_the_inner_voices_prior_steers_the_tenor(composer):
    model, vocab = composer.model, composer.vocab
    prior = third_below()
    prior.inner[0, :, :, NONE, :] = -30.0
    prior.inner[0, :, :, NONE, 7] = 0.0  # the tenor on G, whatever the soprano and the bass

    def tenors_on_g(weight: float) -> int:
        lower = harmonize_line(
            NumpySteps(model),
            vocab,
            notes(),
            "major",
            None,
            1.0,
            np.random.default_rng(3),
            prior=prior.tables(notes(), minor=False, meter=FOUR),
            prior_weight=0.0,
            inner_weight=weight,
        )
        return int((lower[:, 1] % 12 == 7).sum())

    # Where the masks leave it no G (between the bass and the melody, within its range and gaps) the
    # tenor sings another note; that happens at most twice on this line.
    assert tenors_on_g(1.0) >= len(LINE) - 2 > tenors_on_g(0.0)
