"""Model folders, a tiny training run, resuming, evaluation and the command's errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bot.errors import ModelNotFound
from bot.eval.evaluate import KneserNey, Unigram, evaluate
from bot.model import network as M
from bot.model.train import train

pytestmark = pytest.mark.timeout(600)
TINY = {"hidden": 32, "embed_dim": 16, "seq_len": 48, "batch_size": 8}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, midi_folder):
    out = tmp_path_factory.mktemp("models") / "tiny"
    card = train(str(midi_folder), out, preset="small", epochs=6, patience=10, overrides=TINY, verbose=0)
    return out, card


def test_tiny_training_lowers_validation_loss(tiny_model):
    out, card = tiny_model
    history = card["training"]["history"]
    assert len(history) == 6
    assert card["training"]["best_val_loss"] < history[0]["val_loss"]
    for name in ("model.keras", "config.json", "vocab.json", "card.json", "README.md"):
        assert (out / name).is_file()
    assert "validation" in (out / "README.md").read_text()


def test_a_model_of_several_styles_is_scored_on_the_chorales(tmp_path, chorales):
    """Trained on the chorales among other music, validation was the chorales' own: the card says so, and
    `etude eval` scores the model there."""
    from bot.model.train import TokenData, save_tokens
    from bot.music.corpus import encode_pieces, split_by_piece
    from bot.music.encoding import Vocabulary

    train_p, val_p = split_by_piece(chorales)
    vocab = Vocabulary.fit(train_p)
    styles = {"chorale": len(train_p) - 1, "renaissance": 1}
    meta = {"source": "music21", "keys": "reference", "styles": styles}
    tokens = tmp_path / "t.npz"
    save_tokens(tokens, TokenData(vocab, encode_pieces(train_p, vocab), encode_pieces(val_p, vocab), meta))
    card = train(None, tmp_path / "m", preset="small", epochs=1, overrides=TINY, verbose=0, tokens=tokens)
    assert card["data"]["validation_source"] == "chorales"
    only = tmp_path / "only.npz"
    meta = {**meta, "source": "chorales", "styles": {"chorale": len(train_p)}}
    save_tokens(only, TokenData(vocab, encode_pieces(train_p, vocab), encode_pieces(val_p, vocab), meta))
    alone = train(None, tmp_path / "c", preset="small", epochs=1, overrides=TINY, verbose=0, tokens=only)
    assert "validation_source" not in alone["data"]


def test_model_folder_round_trip(tiny_model):
    out, card = tiny_model
    m = M.load(out)
    assert m.config == M.Config.from_dict(json.loads((out / "config.json").read_text()))
    assert m.config.hidden == 32 and len(m.vocab) == m.config.vocab_size
    x = np.array([[m.vocab.start, m.vocab.shift_base]])
    again = M.load(out)
    assert np.allclose(np.asarray(m.net(m.inputs(x))), np.asarray(again.net(again.inputs(x))))
    assert m.card["parameters"] == M.parameter_count(m.net)


def test_loading_refuses_a_missing_or_partial_folder(tmp_path):
    with pytest.raises(ModelNotFound, match="no model folder"):
        M.load(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match="lacks"):
        M.load(tmp_path)


def test_resume_continues_from_the_checkpoint(tmp_path, midi_folder):
    out = tmp_path / "resumable"
    first = train(str(midi_folder), out, preset="small", epochs=2, overrides=TINY, verbose=0)
    second = train(str(midi_folder), out, preset="small", epochs=3, overrides=TINY, verbose=0)
    assert first["training"]["epochs"] == 2 and second["training"]["epochs"] == 3
    assert [h["epoch"] for h in second["training"]["history"]] == [1, 2, 3]


def test_kneser_ney_is_a_distribution_and_beats_unigram(chorales):
    from bot.music.corpus import encode_pieces, split_by_piece
    from bot.music.encoding import Vocabulary

    train_p, val_p = split_by_piece(chorales)
    vocab = Vocabulary.fit(p.events for p in train_p)
    tr, va = encode_pieces(train_p, vocab), encode_pieces(val_p, vocab)
    kn, uni = KneserNey(tr, len(vocab), order=4), Unigram(tr, len(vocab))
    p = kn.probs(va[0])
    assert np.allclose(p.sum(1), 1.0)
    target = va[0][1:]
    kn_bits = -np.log2(p[np.arange(len(target)), target]).sum()
    uni_bits = -np.log2(uni.probs(va[0])[np.arange(len(target)), target]).sum()
    assert kn_bits < uni_bits


def test_evaluate_reports_model_and_baselines(tiny_model, tmp_path, midi_folder):
    out, _ = tiny_model
    tutorial = tmp_path / "tutorial"
    train(
        str(midi_folder),
        tutorial,
        preset="tutorial",
        epochs=1,
        steps_per_epoch=2,
        verbose=0,
        overrides={"hidden": 16, "layers": 1, "seq_len": 20, "batch_size": 8},
    )
    result = evaluate(str(out), tutorial=str(tutorial), tutorial_notes=200, write_card=True)
    assert set(result["baselines"]) == {"unigram", "ngram", "tutorial"}
    for r in [result["model"], *result["baselines"].values()]:
        assert r["nll_bits_per_note"] > 0 and 0 <= r["accuracy"] <= 1 and r["notes"] > 0
    assert (
        result["baselines"]["ngram"]["nll_bits_per_note"]
        < result["baselines"]["unigram"]["nll_bits_per_note"]
    )
    assert json.loads((out / "card.json").read_text())["evaluation"]["model"] == result["model"]


def run_etude(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], capture_output=True, text=True, timeout=300, **kw
    )


def test_cli_empty_folder_is_one_line_error(tmp_path):
    r = run_etude("train", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: no MIDI or score files in {tmp_path}"]


def test_cli_eval_json_on_a_missing_model(tmp_path):
    r = run_etude("eval", "--model", str(tmp_path / "none"), "--json")
    assert r.returncode == 2 and r.stderr.startswith("error: no model folder") and "Traceback" not in r.stderr


def test_eval_prints_both_sections(monkeypatch, capsys):
    """The loss section and the musical section both name the model; the table shows both."""
    import bot.eval.evaluate as E
    import bot.eval.music_eval as ME
    from bot.cli import main

    scores = {"nll_bits_per_note": 9.5, "accuracy": 0.5, "notes": 10}
    loss = {"model": scores, "baselines": {"ngram": dict(scores, nll_bits_per_note=11.0)}}
    loss["improvement_over_best_baseline"] = 0.1
    monkeypatch.setattr(E, "evaluate", lambda *a, **k: dict(loss))
    monkeypatch.setattr(ME, "evaluate_music", lambda *a, **k: {"model": "m", "music": {}})
    monkeypatch.setattr(ME, "music_table", lambda music, fidelity=None: "MUSIC TABLE")
    assert main(["eval", "--model", "x"]) == 0
    out = capsys.readouterr().out
    assert "9.500" in out and "MUSIC TABLE" in out


def test_the_learning_rate_halves_down_to_its_floor_and_the_tutorial_keeps_its_own():
    from bot.model.train import LR_FACTOR, MIN_LR, slower

    config = M.preset("small", vocab_size=40)
    net = M.build(config)
    M.compile_model(net, config)
    rates = [slower(net) for _ in range(8)]
    assert rates[0] == pytest.approx(config.learning_rate * LR_FACTOR)
    assert rates[1] == pytest.approx(config.learning_rate * LR_FACTOR**2)
    assert rates[-1] == pytest.approx(MIN_LR) and min(rates) >= MIN_LR
    assert config.lr_patience > 0 and M.preset("tutorial").lr_patience == 0


def test_the_card_and_history_say_how_the_rate_moved(tiny_model):
    _, card = tiny_model
    assert "learning rate halved after every 2" in card["data"]["regularization"]
    assert all(e["learning_rate"] > 0 for e in card["training"]["history"])


def test_weight_average_is_the_mean_and_survives_a_round_trip(tmp_path):
    from bot.model.averaging import WeightAverage, best_source

    avg = WeightAverage()
    runs = [[np.full((2, 3), v, "float32"), np.full(4, -v, "float32")] for v in (1.0, 2.0, 6.0)]
    for w in runs:
        avg.add(w)
    mean = avg.weights(runs[0])
    assert avg.count == 3 and mean[0].dtype == np.float32
    np.testing.assert_allclose(mean[0], 3.0)
    np.testing.assert_allclose(mean[1], -3.0)
    avg.dump(tmp_path / "a.npz")
    back = WeightAverage.load(tmp_path / "a.npz")
    assert back.count == 3 and all(np.array_equal(a, b) for a, b in zip(back.mean, avg.mean))
    assert not WeightAverage.load(tmp_path / "none.npz").active
    history = [
        {"epoch": 1, "val_loss": 2.0},
        {"epoch": 2, "val_loss": 1.5},
        {"epoch": 3, "val_loss": 1.6, "val_loss_average": 1.55, "averaged_epochs": 1},
        {"epoch": 4, "val_loss": 1.7, "val_loss_average": 1.4, "averaged_epochs": 2},
    ]
    assert best_source(history) == "the mean of epochs 3-4"
    assert best_source(history[:3]) == "epoch 2"


def test_the_run_ends_with_averaged_epochs_and_a_resumed_run_goes_on_averaging(tmp_path, midi_folder):
    """At a learning rate of 0 the second epoch does not improve: with a patience of 1 the main run stops
    there and the averaging epochs begin; each is averaged and scored (the mean of unchanged weights scores
    what they score), a resumed run counts on from its checkpoint, and the phase ends after its epochs."""
    from bot.model.averaging import AVERAGE_EPOCHS

    out = tmp_path / "flat"
    flat = {**TINY, "learning_rate": 0.0, "lr_patience": 0}
    train(str(midi_folder), out, preset="small", epochs=4, patience=1, overrides=flat, verbose=0)
    card = train(str(midi_folder), out, preset="small", epochs=50, patience=1, overrides=flat, verbose=0)
    history = card["training"]["history"]
    assert len(history) == 2 + AVERAGE_EPOCHS
    assert not any("val_loss_average" in h for h in history[:2])
    assert [h["averaged_epochs"] for h in history[2:]] == list(range(1, AVERAGE_EPOCHS + 1))
    for h in history[2:]:
        assert h["val_loss_average"] == pytest.approx(h["val_loss"], rel=1e-5)
    assert card["training"]["best_weights"] == "epoch 1"
    assert f"then {AVERAGE_EPOCHS} epochs at 0.5 of the first rate" in card["data"]["regularization"]
    assert M.preset("etude").average and not M.preset("tutorial").average
