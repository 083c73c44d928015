"""The network, its hyper-parameters, and the model folder that holds both.

A model folder has everything sampling needs and nothing that is unpickled::

    model.keras    weights and architecture, loaded in Keras safe mode
    config.json    the `Config` below, rebuilt with `Config(**saved)`
    vocab.json     the token vocabulary (see encoding.py)
    card.json      data, size, training time, validation loss, the baselines' figures (`bot.cards`)
    README.md      the same card for people
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from bot.cards import DEFAULT_MODEL, load_card
from bot.errors import ModelNotFound
from bot.model import backend
from bot.model.card import write_card
from bot.model.conditioning import STATISTICS, told
from bot.music.encoding import Vocabulary
from bot.music.meter import METER_IDS, Meter, stream_meter_ids
from bot.paths import checked_file


@dataclass
class Config:
    """Hyper-parameters of one network, saved beside its weights."""

    preset: str = "etude"
    vocab_size: int = 0
    input_mode: str = "embedding"  # "embedding" of token ids, or "scalar": id / vocabulary size (tutorial)
    embed_dim: int = 96
    # Where the beat and the bar are (`bot.music.meter.meter_ids`), embedded beside each token. False for
    # networks trained before the network was told (they read the token alone).
    meter_input: bool = False
    meter_dim: int = 16
    # The piece's statistics (`bot.model.conditioning`) beside each token, as Performance RNN is told its
    # note density and pitch classes: a seed's when continuing it, zeros when not told. Needs meter_input.
    stats_input: bool = False
    # 2 x 192: at batch 1 a step's weights (2.2 MB) stay in a core's cache, where 2 x 384 (8 MB) ran at a
    # third of the speed on a 2-core CPU (README, "The shipped model").
    hidden: int = 192
    layers: int = 2
    dropout: float = 0.3
    recurrent_dropout: float = 0.0
    head: str = (
        "linear"  # "linear", or "tutorial": batch norm, dropout, Dense(256), ReLU, batch norm, dropout
    )
    targets: str = "every_step"  # "every_step", or "last": one target per window (tutorial)
    seq_len: int = 192  # training window in tokens
    batch_size: int = 64
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    # Epochs without a better validation loss before the learning rate halves (`bot.model.train`); 0 keeps
    # it constant, as the tutorial did.
    lr_patience: int = 2
    # End with epochs whose weights are averaged (`bot.model.averaging`); the tutorial did not.
    average: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


PRESETS: dict[str, Config] = {
    "etude": Config(meter_input=True),
    "small": Config(
        preset="small",
        embed_dim=32,
        meter_input=True,
        meter_dim=8,
        hidden=64,
        layers=1,
        dropout=0.0,
        seq_len=64,
        batch_size=16,
    ),
    # The original tutorial's network: 3 x LSTM(512) over the token index scaled to [0, 1], one target
    # per 100-token window, RMSprop.
    "tutorial": Config(
        preset="tutorial",
        input_mode="scalar",
        embed_dim=0,
        hidden=512,
        layers=3,
        dropout=0.3,
        recurrent_dropout=0.3,
        head="tutorial",
        targets="last",
        seq_len=100,
        batch_size=64,
        learning_rate=1e-3,
        optimizer="rmsprop",
        lr_patience=0,
        average=False,
    ),
}


def preset(name: str, **overrides) -> Config:
    if name not in PRESETS:
        from bot.errors import BadOption

        raise BadOption(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def build(config: Config):
    """A Keras model that maps token windows to next-token logits.

    every_step: int ids (batch, time) -> logits (batch, time, vocab); with `meter_input` the inputs are
                [token ids, meter ids] (both (batch, time)), the two embeddings side by side; with
                `stats_input` also the statistics (batch, time, STATISTICS) beside them
    last:       scalars (batch, time, 1) -> logits (batch, vocab)
    """
    keras = backend.keras()
    from keras import layers

    v = config.vocab_size
    if config.input_mode == "embedding":
        inputs = keras.Input((None,), dtype="int32", name="tokens")
        x = layers.Embedding(v, config.embed_dim, name="embed")(inputs)
        if config.meter_input:
            meter = keras.Input((None,), dtype="int32", name="meter")
            where = layers.Embedding(METER_IDS, config.meter_dim, name="meter_embed")(meter)
            parts, inputs = [x, where], [inputs, meter]
            if config.stats_input:
                stats = keras.Input((None, STATISTICS), dtype="float32", name="stats")
                parts, inputs = [*parts, stats], [*inputs, stats]
            x = layers.Concatenate(name="token_and_meter")(parts)
    else:
        inputs = keras.Input((None, 1), dtype="float32", name="scaled_tokens")
        x = inputs
    for i in range(config.layers):
        last = i == config.layers - 1
        x = layers.LSTM(
            config.hidden,
            return_sequences=config.targets == "every_step" or not last,
            recurrent_dropout=config.recurrent_dropout,
            name=f"lstm_{i}",
        )(x)
        if config.dropout and config.head == "linear":
            x = layers.Dropout(config.dropout, name=f"drop_{i}")(x)
    if config.head == "tutorial":
        x = layers.BatchNormalization(name="head_norm_0")(x)
        x = layers.Dropout(config.dropout, name="head_drop_0")(x)
        x = layers.Dense(256, name="head_dense")(x)
        x = layers.Activation("relu", name="head_relu")(x)
        x = layers.BatchNormalization(name="head_norm_1")(x)
        x = layers.Dropout(config.dropout, name="head_drop_1")(x)
    logits = layers.Dense(v, name="logits")(x)
    return keras.Model(inputs, logits, name=config.preset)


def compile_model(model, config: Config) -> None:
    keras = backend.keras()

    opt = (keras.optimizers.RMSprop if config.optimizer == "rmsprop" else keras.optimizers.Adam)(
        learning_rate=config.learning_rate, clipnorm=1.0
    )
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[] if config.targets == "every_step" else None,
    )


@dataclass
class LoadedModel:
    """A network with its config, vocabulary, card and folder."""

    net: object
    config: Config
    vocab: Vocabulary
    card: dict
    path: Path

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name

    def inputs(self, tokens: np.ndarray, meters: Sequence[Meter] | None = None, stats=None):
        """What the network takes for rows of token ids (batch, time), each a stream from its beginning:
        the ids alone, or with their metrical input counted in each row's meter (4/4 from the first
        downbeat when not given), and for a network told statistics, `stats` (none: not told)."""
        tokens = np.asarray(tokens, np.int32)
        if not self.config.meter_input:
            return tokens
        table = self.vocab.shift_table()
        meters = meters or [Meter()] * len(tokens)
        out = [tokens, np.stack([stream_meter_ids(table[row], m) for row, m in zip(tokens, meters)])]
        if self.config.stats_input:
            out.append(np.repeat(told(stats, len(tokens))[:, None], tokens.shape[1], axis=1))
        return out


def save(folder: Path, net, config: Config, vocab: Vocabulary, card: dict | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    net.save(folder / "model.keras")
    (folder / "config.json").write_text(json.dumps(asdict(config), indent=1))
    vocab.save(folder / "vocab.json")
    if card is not None:
        write_card(folder, card)


# What a model folder's files may weigh: far above any model this code trains, far below what hurts.
MODEL_FILE_MAX_BYTES = {"model.keras": 2**30, "config.json": 2**20, "vocab.json": 16 * 2**20}


def load(folder: str | Path | None = None) -> LoadedModel:
    """Load a model folder in Keras safe mode; a missing or incomplete folder is a `ModelNotFound`."""
    folder = Path(folder) if folder else DEFAULT_MODEL
    missing = [f for f in ("model.keras", "config.json", "vocab.json") if not (folder / f).is_file()]
    if missing:
        what = "no model folder" if not folder.is_dir() else f"model folder lacks {', '.join(missing)}"
        raise ModelNotFound(f"{what}: {folder}")
    for name, cap in MODEL_FILE_MAX_BYTES.items():
        checked_file(folder / name, f"the model's {name}", cap, ModelNotFound)
    keras = backend.keras()
    try:
        config = Config.from_dict(json.loads((folder / "config.json").read_text()))
        vocab = Vocabulary.load(folder / "vocab.json")
        net = keras.saving.load_model(folder / "model.keras", compile=False, safe_mode=True)
        card = load_card(folder)
    except Exception as e:  # whatever Keras or the JSON reader make of broken files, it is one line here
        raise ModelNotFound(
            f"the model in {folder} cannot be loaded ({type(e).__name__}: {e})"[:300]
        ) from None
    return LoadedModel(net, config, vocab, card, folder)


def parameter_count(net) -> int:
    return int(sum(int(w.numpy().size) for w in net.weights if w.trainable))
