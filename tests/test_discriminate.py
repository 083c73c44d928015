"""The discriminator on hand-built sources: about 50% between two samples of one source, about 100%
between clearly different ones; its pieces of machinery on their own."""

from __future__ import annotations

import numpy as np
import pytest

from bot.eval import discriminate as D
from bot.eval import listener_card as L
from bot.music.events import Event

pytestmark = pytest.mark.timeout(120)

TRIADS = [(48, 55, 64, 72), (41, 57, 65, 72), (43, 55, 62, 71), (45, 57, 64, 72), (50, 57, 65, 74)]


def hymn(rng: np.random.Generator, beats: int = 64) -> list[Event]:
    """Four-part chords of one or two beats, drawn from a few C major voicings."""
    out, t = [], 0.0
    while t < beats:
        d = float(rng.choice([1.0, 1.0, 2.0]))
        out.append(Event(t, d, TRIADS[int(rng.integers(len(TRIADS)))]))
        t += d
    return out


def runs(rng: np.random.Generator, beats: int = 64) -> list[Event]:
    """Single notes in sixteenths, anywhere on the keyboard: nothing like a hymn."""
    return [Event(i / 4, 0.25, (int(rng.integers(30, 96)),)) for i in range(beats * 4)]


def test_two_samples_of_one_source_cannot_be_told_apart() -> None:
    rng = np.random.default_rng(7)
    a = [hymn(rng) for _ in range(14)]
    b = [hymn(rng) for _ in range(14)]
    result = D.discriminate(a, b)
    assert 0.25 <= result["accuracy"] <= 0.75
    assert result["excerpts"] == {"real": 28, "generated": 28}
    low, high = result["accuracy_spread"]
    assert low <= 0.5 <= high and high - low > 0.05  # other pieces of one source: anywhere about chance


def test_the_spread_brackets_the_accuracy_and_narrows_where_the_sources_differ() -> None:
    rng = np.random.default_rng(8)
    far = D.discriminate([hymn(rng) for _ in range(10)], [runs(rng) for _ in range(10)])
    low, high = far["accuracy_spread"]
    assert 0.9 <= low <= far["accuracy"] <= high <= 1.0


def test_clearly_different_sources_are_told_apart() -> None:
    rng = np.random.default_rng(8)
    result = D.discriminate([hymn(rng) for _ in range(10)], [runs(rng) for _ in range(10)])
    assert result["accuracy"] >= 0.95
    assert len(result["telling"]) == 6 and all("feature" in t for t in result["telling"])


def test_logistic_regression_finds_the_separating_direction() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 1] > 0).astype(float)
    w = D.fit_logistic(x, y, l2=0.1)
    assert abs(w[1]) > 5 * max(abs(w[0]), abs(w[2])) and w[1] > 0


def test_folds_keep_a_pieces_excerpts_together() -> None:
    groups = ["0:0", "0:0", "0:1", "0:2", "1:0", "1:0", "1:1", "1:2"]
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    folds = D.group_folds(groups, y, k=3)
    assert folds[0] == folds[1] and folds[4] == folds[5]
    assert len(set(folds[:4])) == 3 and len(set(folds[4:])) == 3


def test_excerpts_are_whole_and_capped() -> None:
    rng = np.random.default_rng(1)
    assert len(D.excerpts(hymn(rng, 64))) == 2
    assert len(D.excerpts(hymn(rng, 500))) == D.MAX_EXCERPTS
    assert D.excerpts(hymn(rng, 20)) == []  # shorter than one excerpt


def test_texture_variation_sees_a_texture_that_thins_and_thickens() -> None:
    steady = [Event(i, 1, (48, 55, 64, 72)) for i in range(32)]
    thinning = [Event(i, 1, (48, 55, 64, 72) if (i // 8) % 2 == 0 else (72,)) for i in range(32)]
    assert D.excerpt_features(steady)["texture variation per 8 beats"] == pytest.approx(0.0)
    assert D.excerpt_features(thinning)["texture variation per 8 beats"] == pytest.approx(0.6)


def test_the_folk_part_is_measured_and_shown_beside_the_chorales() -> None:
    """With meters the form section counts repeated bars on both sides; a listener section with a folk
    part prints and renders it after the chorales' part, with the tunes' figures beside the samples'."""
    from bot.music.meter import Meter

    rng = np.random.default_rng(3)
    tunes = [runs(rng, 16) * 1 for _ in range(4)]
    tunes = [t + [Event(e.onset + 16, e.duration, e.pitches) for e in t] for t in tunes]  # played twice
    others = [runs(rng, 32) for _ in range(4)]
    form = D.form_section(tunes, others, ([Meter(2, 4)] * 4, [Meter()] * 4))
    assert form["real"]["repeated_bars"]["median"] == pytest.approx(0.5)
    assert form["generated"]["repeated_bars"]["median"] == 0.0
    assert "repeated_bars" not in D.form_section(tunes, others)["real"]
    chorales = [hymn(rng) for _ in range(6)]
    part = {
        "samples": {"pieces": 4, "length": 128, "rng_seeds": [5000, 5003]},
        "discriminator": D.discriminate(tunes, others),
        "form": form,
    }
    section = {
        "samples": {"pieces": 6, "length": 64, "rng_seeds": [5000, 5005]},
        "discriminator": D.discriminate(chorales, [hymn(rng) for _ in range(6)]),
        "form": D.form_section(chorales, chorales),
        "folk": part,
    }
    card = "\n".join(L.card_markdown(section))
    assert card.index("## Can a listener tell?") < card.index("### Folk tunes")
    folk = card[card.index("### Folk tunes") :]
    assert "4 unseeded tunes of 128 notes in the folk style" in folk
    assert "| bars that repeat an earlier bar | 0.50 [0.50, 0.50] | 0.00 |" in folk
    assert "phrase cadences" not in folk  # a single line closes no chord cadences to count
    printed = L.listener_table(section)
    assert "folk: 4 unseeded tunes" in printed and "tunes: median [5th, 95th]" in printed
    assert "### Folk" not in "\n".join(L.card_markdown({k: v for k, v in section.items() if k != "folk"}))
