"""The third way to listen to a seed: a network told the piece's statistics, as Performance RNN is told its
note density and pitch classes, started from another model's weights, trained, and told a seed's
statistics by every place that steps it (the compiled sampler, the NumPy steps, the composer)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bot.errors import BadData, BadOption
from bot.model import network as M
from bot.model.averaging import AVERAGE_EPOCHS, AVERAGE_RATE
from bot.model.composer import Composer
from bot.model.conditioning import MIN_ONSETS, STATISTICS, statistics
from bot.model.epochs import warm_start
from bot.model.steps import NumpySteps
from bot.model.train import train
from bot.music.events import Event
from bot.music.meter import Meter
from bot.options import Options

pytestmark = pytest.mark.timeout(600)
SHAPE = {"hidden": 48, "embed_dim": 16, "seq_len": 64, "batch_size": 8}  # the shared tiny model's


@pytest.fixture(scope="module")
def told(tmp_path_factory, midi_folder, tiny_model_dir):
    out = tmp_path_factory.mktemp("models") / "told"
    card = train(
        str(midi_folder),
        out,
        preset="small",
        epochs=50,
        patience=10,
        init=tiny_model_dir,
        overrides={**SHAPE, "stats_input": True},
        verbose=0,
    )
    return M.load(out), card


def test_the_statistics_of_a_scale(composer):
    vocab = composer.vocab
    scale = [Event(float(i), 1.0, (60 + (0, 2, 4, 5, 7, 9, 11)[i % 7] + 12 * (i // 7),)) for i in range(14)]
    s = statistics(vocab, vocab.encode(scale, mode="major", style="chorale"))
    assert s.shape == (STATISTICS,) and s[16] == 1.0
    assert s[:12].sum() == pytest.approx(1.0)
    assert set(np.flatnonzero(s[:12])) == {0, 2, 4, 5, 7, 9, 11}
    assert s[12] == pytest.approx(0.0)  # one onset a beat
    assert s[13] == pytest.approx(0.0)  # one note an onset
    assert s[14] == pytest.approx((np.mean([e.pitches[0] for e in scale]) - 60) / 12, abs=1e-5)
    chord = [Event(float(i), 1.0, (60, 64, 67)) for i in range(8)]
    assert statistics(vocab, vocab.encode(chord))[13] == pytest.approx(np.log(3))
    # Too little music says nothing.
    assert not statistics(vocab, vocab.encode(scale[: MIN_ONSETS - 1])).any()


def test_a_warm_started_network_computes_what_its_source_did(tiny_model_dir):
    source = M.load(tiny_model_dir)
    config = replace(source.config, stats_input=True)
    net = M.build(config)
    warm_start(net, source.net)
    grown = replace(source, net=net, config=config)
    ids = np.array(
        [[source.vocab.start, *source.vocab.head("major", "chorale")[1:], source.vocab.shift_base]]
    )
    want = np.asarray(source.net(source.inputs(ids), training=False))
    for stats in (None, np.full(STATISTICS, 0.5)):
        assert np.allclose(np.asarray(net(grown.inputs(ids, stats=stats), training=False)), want, atol=1e-5)


def test_training_from_a_model_learns_to_hear_the_statistics(told, tiny_model_dir):
    model, card = told
    assert model.config.stats_input
    history = card["training"]["history"]
    assert card["training"]["init"] == str(tiny_model_dir)
    # Straight to the averaged epochs, at their steady rate (averaged from the first that does not improve).
    assert len(history) == AVERAGE_EPOCHS
    rate = model.config.learning_rate * AVERAGE_RATE
    assert all(h["learning_rate"] == pytest.approx(rate) for h in history)
    assert card["training"]["best_weights"].startswith(("epoch", "the mean of epochs"))
    ids = np.array([model.vocab.encode([Event(float(i), 1.0, (60 + i % 5,)) for i in range(12)])])
    plain = np.asarray(model.net(model.inputs(ids), training=False))
    heard = np.asarray(model.net(model.inputs(ids, stats=statistics(model.vocab, ids[0])), training=False))
    assert not np.allclose(plain, heard, atol=1e-4)


def test_the_numpy_steps_hear_the_statistics_as_the_network_does(told):
    model, _ = told
    events = [Event(0.5 * t, 0.5, (60 + t % 7, 48)) for t in range(12)]
    ids = np.array(model.vocab.encode(events, mode="major", style="chorale"))
    stats = statistics(model.vocab, ids)
    steps = NumpySteps(model, k=2, meter=Meter(), stats=stats)
    got = [steps.start(ids[:1])]
    for t in ids[1:-1]:
        got.append(steps.feed(np.array([t, t]), np.arange(2)))
    logits = np.asarray(model.net(model.inputs(ids[None, :-1], stats=stats), training=False))[0]
    want = logits - logits.max(1, keepdims=True)
    want = want - np.log(np.exp(want).sum(1, keepdims=True))
    assert np.allclose(np.stack(got)[:, 0], want, atol=1e-3)


def test_a_seed_is_continued_told_its_statistics_and_the_same_without_them_otherwise(told):
    model, _ = told
    composer = Composer(model)
    data = composer.compose_one(Options(length=24, rng_seed=5)).midi()
    seed = composer.seed(data, "seed")
    options = Options(length=40, rng_seed=11)
    heard = composer.compose([(options, seed)])[0]
    composer.seed_statistics = False
    plain = composer.compose([(options, seed)])[0]
    assert [e.pitches for e in heard.events] != [e.pitches for e in plain.events]
    # An unseeded piece is told nothing either way.
    composer.seed_statistics = True
    alone = composer.compose([(Options(length=20, rng_seed=3), None)])[0]
    composer.seed_statistics = False
    assert composer.compose([(Options(length=20, rng_seed=3), None)])[0].events == alone.events


def test_a_run_keeps_its_starts_vocabulary_and_refuses_a_start_of_another_shape(
    tmp_path, midi_folder, tiny_model_dir
):
    """The data is encoded with the start's vocabulary (the same tokens over the piano; the start's range
    and keys kept, whatever the data spans); a start whose layers have other shapes is refused."""
    import shutil

    from bot.music.midi_out import write_midi

    wider = tmp_path / "wider"
    shutil.copytree(midi_folder, wider)
    start = M.load(tiny_model_dir).vocab
    high = [Event(float(i), 1.0, (start.pitch_high + 5 - i % 3,)) for i in range(40)]
    write_midi(high, wider / "high.mid", tempo=100)
    train(
        str(wider), tmp_path / "w", preset="small", epochs=1, init=tiny_model_dir, overrides=SHAPE, verbose=0
    )
    assert M.load(tmp_path / "w").vocab.to_json() == start.to_json()
    with pytest.raises(BadData, match="cannot start"):
        train(str(midi_folder), tmp_path / "x", preset="small", epochs=1, init=M.DEFAULT_MODEL, verbose=0)


def test_a_run_from_a_model_can_end_part_of_the_way_from_it(tmp_path, midi_folder, tiny_model_dir):
    """With --blend the result is that share of the way from the start's weights to the run's own result
    (kept as the checkpoint's best), scored on the validation pieces as it is."""
    out = tmp_path / "blended"
    card = train(
        str(midi_folder), out, preset="small", init=tiny_model_dir, blend=0.25, overrides=SHAPE, verbose=0
    )
    start = M.load(tiny_model_dir).net.get_weights()
    ran = keras_model(out / "checkpoint" / "best.keras").get_weights()
    got = M.load(out).net.get_weights()
    for a, b, c in zip(start, ran, got, strict=True):
        assert np.allclose(c, 0.75 * a + 0.25 * b, atol=1e-6)
    assert card["training"]["best_weights"].startswith(f"0.25 of the way from {tiny_model_dir} to ")
    with pytest.raises(BadOption, match="--blend needs --init"):
        train(str(midi_folder), tmp_path / "y", preset="small", blend=0.5, verbose=0)


def keras_model(path):
    from bot.model import backend

    return backend.keras().saving.load_model(path, safe_mode=True, compile=False)
