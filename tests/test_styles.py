"""The style a piece is written in: asked for, fitted to the seed by the network, or the default."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from bot.cards import DEFAULT_MODEL
from bot.errors import BadOption, ModelNotFound
from bot.model.styles import default_style, is_one_line, known_styles, offered_styles, seed_losses
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
    assert default_style(shipped.model) == "chorale"
    assert shipped.style(Options(rng_seed=1), None) == ("chorale", "default")


def notes_per_onset(piece) -> float:
    new = piece.events[piece.seed_events :]
    return sum(len(e.pitches) for e in new) / len({e.onset for e in new})


def jig() -> list[Event]:
    """A tune of one line in eighths, in D major, as the folk collections are full of; played twice."""
    tune = "62 66 69 74 73 71 69 66 69 71 69 67 66 69 74 73 71 69 67 66 64 62 62 62"
    return [Event(0.5 * i, 0.5, (int(p),)) for i, p in enumerate(tune.split() * 2)]


def test_folk_is_written_by_a_network_of_its_own(shipped):
    """The shipped network heard the folk tunes too faintly to write them: a network beside it that
    learnt them writes the folk style, a single line where the others write parts."""
    assert shipped.own_network_styles == ("classical", "folk") and set(offered_styles(shipped.model)) == set(
        STYLES
    )
    folk = shipped.compose_one(Options(length=40, rng_seed=2, style="folk"))
    chorale = shipped.compose_one(Options(length=40, rng_seed=2, style="chorale"))
    assert (folk.style, folk.style_source, chorale.model) == ("folk", "asked", "etude-chorales")
    assert folk.model != chorale.model and shipped.writer("folk").model.path.parent.name == "styles"
    assert notes_per_onset(folk) < 1.3 and notes_per_onset(chorale) > 2
    # One batch holding both styles gives each piece what it gives alone.
    both = shipped.compose([(Options(length=40, rng_seed=2, style=s), None) for s in ("folk", "chorale")])
    assert [p.midi() for p in both] == [folk.midi(), chorale.midi()]


def test_each_style_is_sampled_at_its_own_temperature_unless_one_is_asked_for(shipped):
    """Without a temperature a piece is sampled at its style's (`bot.options.STYLE_TEMPERATURES`), which
    the piece's options then carry; one asked for is kept; the same options still give the same piece."""
    from bot.options import DEFAULT_TEMPERATURE, STYLE_TEMPERATURES

    folk = shipped.compose_one(Options(length=30, rng_seed=5, style="folk"))
    chorale = shipped.compose_one(Options(length=30, rng_seed=5))
    assert folk.options.temperature == STYLE_TEMPERATURES["folk"] != DEFAULT_TEMPERATURE
    assert chorale.options.temperature == DEFAULT_TEMPERATURE
    asked = Options(length=30, rng_seed=5, style="folk", temperature=STYLE_TEMPERATURES["folk"])
    assert shipped.compose_one(asked).midi() == folk.midi()
    cooler = shipped.compose_one(Options(length=30, rng_seed=5, style="folk", temperature=1.0))
    assert cooler.options.temperature == 1.0 and cooler.midi() != folk.midi()
    assert Options().for_style("renaissance").temperature == DEFAULT_TEMPERATURE
    assert Options(temperature=0.5).for_style("folk").temperature == 0.5


def test_a_tune_is_continued_by_the_network_of_tunes_and_two_lines_are_fitted(shipped):
    """A seed of one line, a tune, is written as folk by the network that learnt the tunes, and the reply
    says why; a seed of two lines is fitted among the main network's styles (inside one network the style
    token barely moves a seed's likelihood, and two networks' likelihoods are not comparable)."""
    seed = shipped.seed(midi_bytes(jig()), "jig")
    tune = shipped.compose_one(Options(length=24, rng_seed=1), seed)
    assert (tune.style, tune.style_source, tune.model) == ("folk", "line", shipped.writer("folk").model.name)
    assert tune.said[0] == "written as folk: the seed is a single line, a tune"
    assert notes_per_onset(tune) < 1.3 and "style_losses" not in seed.meta
    bass = [Event(e.onset, e.duration, (e.pitches[0], e.pitches[0] - 12)) for e in jig()]
    two = shipped.seed(midi_bytes(bass), "jig in octaves")
    fitted = shipped.compose_one(Options(length=24, rng_seed=1), two)
    assert fitted.style_source == "seed" and set(two.meta["style_losses"]) == set(STYLES) - {"folk"}
    asked = shipped.compose_one(Options(length=24, rng_seed=1, style="chorale"), seed)
    assert (asked.style, asked.style_source, asked.model) == ("chorale", "asked", "etude-chorales")
    assert is_one_line(jig()) and not is_one_line(bass) and not is_one_line([])
    legato = [Event(e.onset, 0.6, e.pitches) for e in jig()]  # each note held a little into the next
    broken = [Event(0.25 * i, 2.0, (60 + (0, 4, 7, 12)[i % 4],)) for i in range(32)]  # held, as a prelude's
    assert is_one_line(legato) and not is_one_line(broken)


def test_a_song_for_voice_and_piano_is_continued_by_the_network_that_learnt_the_songs(shipped, chorales):
    """The classical network heard the songs of the OpenScore Lieder Corpus: a song none of its runs read
    is likelier under it than under any of the main network's styles, so that network continues it, and
    the reply says so; a chorale stays with the main network."""
    from bot.music.lieder import load_lieder

    song = next(p for p in load_lieder(held_out=True) if "Aloha" not in p.name)
    seed = shipped.seed(midi_bytes(song.events[:120]), "song")
    piece = shipped.compose_one(Options(length=16, rng_seed=4), seed)
    losses = seed.meta["style_losses"]
    assert set(losses) == set(STYLES) - {"folk"} and min(losses, key=losses.get) == "classical"
    assert (piece.style, piece.style_source, piece.model) == ("classical", "seed", "etude-chorales/classical")
    assert "written as classical, the style that fits the seed best" in piece.said
    chorale = shipped.compose_one(
        Options(length=12, rng_seed=4), shipped.seed(midi_bytes(chorales[0].events[:60]))
    )
    assert (chorale.style, chorale.model) == ("chorale", "etude-chorales")


def test_a_style_network_of_another_vocabulary_is_refused(tmp_path, tiny_model_dir):
    from bot.model.composer import Composer

    folder = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, folder, ignore=shutil.ignore_patterns("styles"))
    shutil.copytree(tiny_model_dir, folder / "styles" / "folk")
    with pytest.raises(ModelNotFound, match="is not a network of .* vocabulary that learnt folk"):
        Composer(folder).compose_one(Options(length=8, rng_seed=1, style="folk"))


def test_a_chorale_seed_is_continued_as_a_chorale_and_the_reply_says_so(shipped, chorales):
    seed = shipped.seed(midi_bytes(chorales[0].events[:60]), "chorale")
    style, source = shipped.style(Options(rng_seed=1), seed)
    losses = seed.meta["style_losses"]
    assert (style, source) == ("chorale", "seed") and set(losses) == set(STYLES) - {"folk"}
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
