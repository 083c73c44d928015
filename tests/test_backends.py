"""The composer on either Keras backend: same results every time, the two backends agree token for token,
a model trained on one samples on the other, tokens files, and no TensorFlow on the JAX path.

The backend of this process is the one pytest runs under (KERAS_BACKEND, TensorFlow by default); the
other one runs in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.cards import DEFAULT_MODEL
from bot.errors import BadData
from bot.model import backend
from bot.model import network as M
from bot.model.composer import Composer
from bot.model.sample import Request, Sampler
from bot.model.train import TokenData, load_tokens, save_tokens, train
from bot.options import Options

pytestmark = pytest.mark.timeout(600)
HERE = backend.name()
OTHER = "jax" if HERE == "tensorflow" else "tensorflow"
ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden": 32, "embed_dim": 16, "seq_len": 48, "batch_size": 8}
# Fixed requests (mode of the head, or none; length, temperature, top-p, RNG seed), long enough for 100
# tokens and more; the short minor one reaches its steered closing cadence inside its first 100 tokens.
FIXED = [(None, 60, 1.0, 0.95, 12345), (None, 40, 1.3, 0.8, 7), ("minor", 8, 1.0, 0.95, 5)]

needs_other = pytest.mark.skipif(
    importlib.util.find_spec(OTHER) is None, reason=f"{OTHER} is not installed in this environment"
)


def run_python(code: str, keras_backend: str, timeout: float = 300) -> str:
    """Run `code` in a fresh interpreter on `keras_backend`; its stdout, or the test fails with its stderr."""
    env = {**os.environ, "KERAS_BACKEND": keras_backend, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


SAMPLE_CODE = """
import json, sys
from bot.model.network import load
from bot.model.sample import Request, Sampler
m = load({model!r})
reqs = [Request(tuple(m.vocab.head(mode)) if mode else (m.vocab.start,), n, t, p, s)
        for mode, n, t, p, s in {fixed!r}]
print(json.dumps({{"tokens": Sampler(m).sample(reqs), "tensorflow": "tensorflow" in sys.modules}}))
"""


def sample_here(model_dir) -> list[list[int]]:
    m = M.load(model_dir)
    heads = [tuple(m.vocab.head(mode)) if mode else (m.vocab.start,) for mode, *_ in FIXED]
    return Sampler(m).sample([Request(h, n, t, p, s) for h, (_, n, t, p, s) in zip(heads, FIXED)])


def sample_there(model_dir, keras_backend: str) -> dict:
    return json.loads(run_python(SAMPLE_CODE.format(model=str(model_dir), fixed=FIXED), keras_backend))


def test_same_options_and_seed_give_the_same_midi_every_time(tmp_path):
    first = Composer()
    opts = Options(length=80, temperature=1.1, top_p=0.9, rng_seed=2024)
    seed = first.seed(first.compose_one(Options(length=16, rng_seed=3)).midi(), "seed")
    a = first.compose_one(opts, seed).midi()
    b = first.compose_one(opts, seed).midi()
    c = Composer().compose_one(opts, seed).midi()  # a second model load and a fresh compile
    assert a == b == c
    assert first.compose_one(Options(length=80, temperature=1.1, top_p=0.9, rng_seed=2025), seed).midi() != a


@needs_other
def test_tensorflow_and_jax_agree_token_for_token():
    here = sample_here(DEFAULT_MODEL)
    there = sample_there(DEFAULT_MODEL, OTHER)["tokens"]
    for mine, theirs in zip(here, there):
        assert len(mine) >= 80
        assert mine[:100] == theirs[:100]
    assert here[-1] == there[-1]  # the whole of the piece steered into its cadence


@needs_other
def test_a_model_trained_on_either_backend_samples_on_the_other(tmp_path, chorales):
    from bot.model.train import corpus_tokens  # noqa: F401  (the same encoding path the CLI takes)
    from bot.music.corpus import encode_pieces, split_by_piece
    from bot.music.encoding import Vocabulary

    train_p, val_p = split_by_piece(chorales)
    vocab = Vocabulary.fit(p.events for p in train_p)
    tokens = tmp_path / "tokens.npz"
    save_tokens(
        tokens,
        TokenData(vocab, encode_pieces(train_p, vocab), encode_pieces(val_p, vocab), {"source": "test"}),
    )
    # Trained here, sampled there.
    here_dir = tmp_path / f"tiny-{HERE}"
    train(
        None, here_dir, preset="small", epochs=1, steps_per_epoch=3, overrides=TINY, verbose=0, tokens=tokens
    )
    there = sample_there(here_dir, OTHER)
    assert there["tokens"][0][:100] == sample_here(here_dir)[0][:100]
    # Trained there, sampled here.
    there_dir = tmp_path / f"tiny-{OTHER}"
    run_python(
        "from pathlib import Path\nfrom bot.model.train import train\n"
        f"train(None, Path({str(there_dir)!r}), preset='small', epochs=1, steps_per_epoch=3, "
        f"overrides={TINY!r}, verbose=0, tokens={str(tokens)!r})",
        OTHER,
    )
    card = json.loads((there_dir / "card.json").read_text())
    assert card["training"]["backend"].split(" on ")[1].lower().startswith(OTHER[:3])
    again = sample_there(there_dir, OTHER)["tokens"]
    assert sample_here(there_dir)[0][:100] == again[0][:100]


def test_the_tutorial_network_samples_too(tmp_path, midi_folder):
    # Its head (batch norm, dense, relu) runs as the model's own layers inside the compiled loop. A small
    # one of its kind, trained on the current encoding (the shipped baseline may be of an older one).
    out = tmp_path / "tutorial"
    small = {"hidden": 16, "layers": 1, "seq_len": 20, "batch_size": 8}
    train(str(midi_folder), out, preset="tutorial", epochs=1, steps_per_epoch=2, verbose=0, overrides=small)
    m = M.load(out)
    assert m.config.head == "tutorial"
    allowed = m.vocab.grammar()
    (tokens,) = Sampler(m).sample([Request((m.vocab.start,), 12, 1.0, 0.95, 3)])
    stream = [m.vocab.start, *tokens]
    assert all(allowed[a, b] for a, b in zip(stream, stream[1:]))
    assert 12 <= m.vocab.count_onsets(tokens) <= 20 and tokens[-1] == m.vocab.end


def test_tokens_file_round_trip_and_refusals(tmp_path, chorales):
    from bot.music.corpus import encode_pieces, split_by_piece
    from bot.music.encoding import Vocabulary

    train_p, val_p = split_by_piece(chorales)
    vocab = Vocabulary.fit(p.events for p in train_p)
    data = TokenData(
        vocab,
        encode_pieces(train_p, vocab),
        encode_pieces(val_p, vocab),
        {"source": "test", "train_names": [p.name for p in train_p]},
    )
    path = tmp_path / "chorales.tokens"  # no .npz suffix: the name is kept as given
    save_tokens(path, data)
    back = load_tokens(path)
    assert back.vocab.to_json() == vocab.to_json() and back.meta == data.meta
    assert all((a == b).all() for a, b in zip(back.train + back.valid, data.train + data.valid))
    assert len(back.train) == len(data.train) and len(back.valid) == len(data.valid)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"vocab", "train", "train_starts", "valid", "valid_starts", "meta"}
        assert z["train"].dtype == np.int32

    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadData, match="cannot read tokens file"):
        load_tokens(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(BadData, match="lacks vocab"):
        load_tokens(tmp_path / "other.npz")


def test_cli_train_refuses_tokens_with_data(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "train",
            "--tokens",
            "x.npz",
            "--data",
            "chorales",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2 and r.stderr.strip() == "error: give --data or --tokens, not both"


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_the_jax_path_never_imports_tensorflow(tmp_path, tiny_model_dir, chorales):
    from bot.music.corpus import encode_pieces, split_by_piece
    from bot.music.encoding import Vocabulary

    train_p, val_p = split_by_piece(chorales)
    vocab = Vocabulary.fit(p.events for p in train_p)
    tokens = tmp_path / "tokens.npz"
    save_tokens(tokens, TokenData(vocab, encode_pieces(train_p, vocab), encode_pieces(val_p, vocab), {}))
    out = run_python(
        "import sys\nfrom pathlib import Path\n"
        "from bot.model.composer import Composer\nfrom bot.model.train import train\n"
        "from bot.options import Options\nfrom bot.model import backend\n"
        f"Composer({str(tiny_model_dir)!r}).compose_one(Options(length=20, rng_seed=1))\n"
        f"train(None, Path({str(tmp_path / 'm')!r}), preset='small', epochs=1, steps_per_epoch=2, "
        f"overrides={TINY!r}, verbose=0, tokens={str(tokens)!r})\n"
        "print(backend.describe())\n"
        "print('tensorflow' in sys.modules)\n",
        "jax",
    )
    described, imported = out.strip().splitlines()[-2:]
    assert "JAX" in described and imported == "False"


async def test_worker_batches_follow_the_device_unless_set(tiny_model_dir, monkeypatch):
    from bot.settings import Settings
    from bot.worker.worker import Worker

    monkeypatch.delenv("BATCH_SIZE", raising=False)
    monkeypatch.delenv("BATCH_WAIT_MS", raising=False)
    settings = Settings(_env_file=None, model_dir=str(tiny_model_dir))
    assert settings.batch_size is None and settings.batch_wait_ms is None
    by_device = Worker.from_settings(settings)
    chosen = Worker(str(tiny_model_dir), batch_size=3, batch_wait_ms=0)
    half = Worker(str(tiny_model_dir), batch_size=5)
    await by_device.start()  # started: what start resolves; the others resolve as start would
    for w in (chosen, half):
        w.resolve_batching()
    on_gpu = backend.accelerator() is not None
    device = (backend.GPU_BATCH, backend.GPU_WAIT_MS) if on_gpu else (backend.CPU_BATCH, backend.CPU_WAIT_MS)
    assert (by_device.batch_size, by_device.batch_wait_ms) == device
    assert (chosen.batch_size, chosen.batch_wait_ms) == (3, 0)
    assert (half.batch_size, half.batch_wait_ms) == (5, device[1])
    await by_device.close()
