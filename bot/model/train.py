"""Fit a network on tokenised pieces: progress bar, validation loss per epoch, early stopping, resume.

The pieces come from a corpus (parsed with music21 or our MIDI reader) or from a tokens file (`.npz`,
see `save_tokens`), so a machine without music21 can train."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bot.errors import BadData, BadOption
from bot.model import backend
from bot.model import network as M
from bot.model.averaging import AVERAGE_EPOCHS, AVERAGE_RATE, WeightAverage, best_source, validation_loss
from bot.model.backend import machine_name
from bot.model.conditioning import statistics
from bot.model.epochs import last_dataset, meter_inputs, step_arrays, warm_start
from bot.music.corpus import KEY_MODES, expand, thinned
from bot.music.encoding import Vocabulary
from bot.music.sources import card_sources

ENCODING_TEXT = (
    "Encoding 2: a frame at every time the set of sounding pitches changes, listing every sounding pitch "
    "as a new attack (P) or held (H), after the time since the previous frame (12 steps a beat: "
    "sixteenths and triplets exact) and before a closing bar (| or |F at a phrase end, the fermatas). "
    "A piece opens with <start>, a style token and its mode, and closes with <end>. Pitches cover the piano."
)
METER_TEXT = (
    " Beside each token the network reads where its time stands in the bar (the bar's length in quarters "
    "and the position in it, one of 768 ids embedded in 16 numbers), counted from the score's time "
    "signature and first bar (a pickup counted back), or for a seed from its file."
)

log = logging.getLogger(__name__)


# -- the data: token streams, from a corpus or from a tokens file ------------------------------------------
@dataclass
class TokenData:
    """Encoded training and validation pieces with their vocabulary and where they came from.

    `meta` holds `source`, `train_names`, `valid_names`, `split` (how pieces were divided), `keys` (a
    `KEY_MODES` entry: how pieces were moved between keys) and `styles` (training pieces by style token).
    """

    vocab: Vocabulary
    train: list[np.ndarray]
    valid: list[np.ndarray]
    meta: dict


def corpus_tokens(
    data: str, limit: int | None = None, vocab: Vocabulary | None = None, keys: str = "reference"
) -> TokenData:
    """Parse a data source (see `load_pieces`), split it by piece and encode it; fit a vocabulary if none.

    With `keys="reference"` every piece is moved to C major or A minor; with `"transpose"` pieces stay in
    their keys and training moves each window at random."""
    from bot.music.corpus import VALIDATION_SHARE, piece_meter, token_data

    vocab, train_p, val_p, train, valid = token_data(data, limit, keys, vocab)
    styles: dict[str, int] = {}
    for p in train_p:
        styles[p.meta.get("style", "other")] = styles.get(p.meta.get("style", "other"), 0) + 1
    sources: dict[str, int] = {}
    for p in train_p + val_p:
        sources[p.meta.get("source", data)] = sources.get(p.meta.get("source", data), 0) + 1
    meta = {
        "source": data,
        # Each piece's time signature and first downbeat (`[numerator, denominator, downbeat]`), from which
        # the network's metrical input is counted (`meter_inputs`).
        "train_meters": [piece_meter(p).to_json() for p in train_p],
        "valid_meters": [piece_meter(p).to_json() for p in val_p],
        "train_names": [p.name for p in train_p],
        "valid_names": [p.name for p in val_p],
        "split": f"by piece: one in {VALIDATION_SHARE} by a hash of its name (the chorales' alone when "
        "other music is added)",
        "keys": keys,
        "styles": styles,
        "sources": sources,
    }
    return TokenData(vocab, train, valid, meta)


def save_tokens(path: Path, data: TokenData) -> None:
    """One `.npz` a machine without music21 can train from; strings are stored as JSON, nothing pickled."""

    def flat(seqs):
        starts = np.cumsum([0] + [len(s) for s in seqs[:-1]]).astype(np.int64)
        return (np.concatenate(seqs) if seqs else np.zeros(0)).astype(np.int32), starts

    train, train_starts = flat(data.train)
    valid, valid_starts = flat(data.valid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:  # a file object, so numpy does not append .npz to a name without it
        np.savez_compressed(
            f,
            vocab=np.array(json.dumps(data.vocab.to_json())),
            train=train,
            train_starts=train_starts,
            valid=valid,
            valid_starts=valid_starts,
            meta=np.array(json.dumps(data.meta)),
        )


def load_tokens(path: Path) -> TokenData:
    """Read a tokens file written by `save_tokens`; anything else is a `BadData`."""
    keys = ("vocab", "train", "train_starts", "valid", "valid_starts", "meta")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise BadData(f"{path} is not a tokens file: it lacks {', '.join(missing)}")
            arrays = {k: z[k] for k in keys}
        vocab = Vocabulary.from_json(json.loads(str(arrays["vocab"])))
        meta = json.loads(str(arrays["meta"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadData(f"cannot read tokens file {path}: {str(e)[:200]}") from None

    def split(tokens: np.ndarray, starts: np.ndarray) -> list[np.ndarray]:
        ends = list(starts[1:]) + [len(tokens)]
        return [tokens[a:b].astype(np.int32) for a, b in zip(starts, ends)]

    train, valid = (
        split(arrays["train"], arrays["train_starts"]),
        split(arrays["valid"], arrays["valid_starts"]),
    )
    if not train or not valid:
        raise BadData(f"{path} needs at least one training and one validation piece")
    if max(int(t.max(initial=0)) for t in train + valid) >= len(vocab):
        raise BadData(f"{path} holds token ids outside its vocabulary")
    return TokenData(vocab, train, valid, meta)


def budget_callback(deadline: float | None):
    """A callback that stops training at a `time.monotonic()` deadline, checked after every execution."""
    keras = backend.keras()

    class Budget(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if deadline is not None and time.monotonic() > deadline:
                self.model.stop_training = True

    return Budget()


def steps_per_execution() -> int:
    """Training steps per compiled call: many on a GPU, whose steps are too short to return to Python
    between them; one on a CPU, where a step takes about a second and the budget is checked after each."""
    return 32 if backend.accelerator() else 1


# Epochs without a better validation loss before training stops; the learning rate halves on the way
# after every `Config.lr_patience` of them: at a constant rate the validation loss wandered about 2% from
# epoch to epoch.
PATIENCE = 6
LR_FACTOR, MIN_LR = 0.5, 1e-4


def slower(net) -> float:
    """Halve the optimizer's learning rate (not below `MIN_LR`); returns the new rate. A checkpoint keeps
    the optimizer, and with it the rate, so a resumed run goes on at the rate it stopped at."""
    rate = max(float(net.optimizer.learning_rate.numpy()) * LR_FACTOR, MIN_LR)
    net.optimizer.learning_rate.assign(rate)
    return rate


def train(
    data: str | None,
    out: Path,
    preset: str = "etude",
    minutes: float | None = None,
    epochs: int = 100,
    patience: int = PATIENCE,
    limit: int | None = None,
    fresh: bool = False,
    steps_per_epoch: int | None = None,
    overrides: dict | None = None,
    verbose: int = 1,
    tokens: str | Path | None = None,
    keys: str = "reference",
    init: str | Path | None = None,
    blend: float | None = None,
) -> dict:
    """Train a model on `data` (a corpus or folder) or on a `tokens` file into the folder `out`; returns
    its card.

    Each epoch is handed to Keras as whole arrays (fresh windows and transpositions every epoch), so a
    GPU runs many steps per call. A run that stops (budget, Ctrl-C, a crash) resumes from
    `out/checkpoint` unless `fresh`. With `init` (a model folder) a new run starts from that model's
    weights (`warm_start`) and goes straight to the averaged epochs; with `blend` the result is that share
    of the way from the start's weights to the run's.
    """
    if blend is not None and not (init is not None and 0.0 < blend <= 1.0):
        raise BadOption("--blend needs --init and a share of the way in (0, 1]")
    keras = backend.keras()

    t_start = time.monotonic()
    ckpt = out / "checkpoint"
    state_path = ckpt / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() and not fresh else None
    vocab = Vocabulary.from_json(state["vocab"]) if state else None
    # A run that starts from a model encodes its data with that model's vocabulary: the same tokens (they
    # cover the piano) whatever range the new data spans, and the start's range and keys kept.
    source = M.load(init) if init is not None and not state else None
    vocab = vocab or (source.vocab if source is not None else None)
    if tokens is not None:
        td = load_tokens(Path(tokens))
        if vocab is not None and td.vocab.to_json() != vocab.to_json():
            raise BadData(f"{tokens} has another vocabulary than the checkpoint in {ckpt}; use --fresh")
    else:
        td = corpus_tokens(
            data or "chorales", limit=limit, vocab=vocab, keys=state.get("keys", keys) if state else keys
        )
    vocab = td.vocab
    keys = td.meta.get("keys", "transpose")  # a tokens file from before keys were moved: own keys
    transpose_keys = keys == "transpose"
    if state:
        config = M.Config.from_dict(state["config"])
        net = keras.saving.load_model(ckpt / "model.keras", safe_mode=True)
        print(f"resuming from epoch {state['epoch']} (best validation loss {state['best_val_loss']:.4f})")
    else:
        config = M.preset(preset, vocab_size=len(vocab), **(overrides or {}))
        net = M.build(config)
        M.compile_model(net, config)
        state = {"epoch": 0, "best_val_loss": None, "seconds": 0.0, "history": [], "wait": 0}
        if source is not None:
            if source.vocab.tokens != vocab.tokens:
                raise BadData(f"{init} has other tokens than --data gives; train it afresh")
            warm_start(net, source.net)
            state["init"] = str(init)
    # Set before the first fit builds the train function; a checkpoint keeps the value it was saved with.
    net.steps_per_execution = steps_per_execution()
    source = td.meta.get("source", str(tokens))
    # The card's sources and their licences, checked before any training: a source without an entry in
    # bot/music/sources.py (or one not to be trained on) stops here. A tokens file from before sources
    # were counted names them by its `--data` value alone.
    sources = card_sources(td.meta.get("sources") or {thinned(name)[0]: None for name, _ in expand(source)})
    print(
        f"{len(td.train)} training pieces, {len(td.valid)} validation pieces, vocabulary {len(vocab)}, "
        f"{M.parameter_count(net):,} parameters ({config.preset}), {backend.describe()}"
    )

    ckpt.mkdir(parents=True, exist_ok=True)
    best_path = ckpt / "best.keras"
    average_path = ckpt / "average.npz"
    average = WeightAverage.load(average_path) if state["epoch"] else WeightAverage()
    train_meters = meter_inputs(vocab, td.train, td.meta.get("train_meters"))
    valid_meters = meter_inputs(vocab, td.valid, td.meta.get("valid_meters"))
    train_stats = [statistics(vocab, s) for s in td.train] if config.stats_input else None
    if config.targets == "every_step":
        validation = step_arrays(config, vocab, td.valid, None, meters=valid_meters)
    else:
        validation = last_dataset(config, vocab, td.valid, 0, augment=False, limit=2048)
    if "init" in state and not state["epoch"]:
        # The run begins where the model it starts from stands: its epochs are averaged from the first
        # that does not improve on it.
        state["best_val_loss"] = validation_loss(net, validation, config.batch_size)
        state["wait"] = patience
        print(f"starting from {state['init']}: validation loss {state['best_val_loss']:.4f}")

    def run_epoch(epoch: int) -> dict:
        rng = np.random.default_rng([0, epoch])  # a resumed run cuts the same windows as an unbroken one
        common = dict(
            epochs=epoch + 1,
            initial_epoch=epoch,
            verbose=verbose,
            callbacks=[budget_callback(deadline)],
            validation_data=validation,
        )
        if config.targets == "every_step":
            x, y, w = step_arrays(config, vocab, td.train, rng, transpose_keys, train_meters, train_stats)
            if steps_per_epoch:
                n = steps_per_epoch * config.batch_size
                x = [a[:n] for a in x] if isinstance(x, list) else x[:n]
                y, w = y[:n], w[:n]
            history = net.fit(x, y, sample_weight=w, batch_size=config.batch_size, shuffle=False, **common)
        else:
            ds = last_dataset(config, vocab, td.train, epoch, augment=transpose_keys)
            history = net.fit(ds, steps_per_epoch=steps_per_epoch, **common)
        return {k: v[-1] for k, v in history.history.items()}

    # The budget counts training time only, across resumed runs; reading the data is not part of it.
    deadline = time.monotonic() + minutes * 60 - state["seconds"] if minutes else None
    epoch = state["epoch"]
    if deadline is not None and time.monotonic() >= deadline:
        print("training budget already spent")
    while epoch < epochs:
        if state["wait"] >= patience and "average_until" not in state:
            if not config.average:
                break
            # The main run is over: from its last weights, a fixed number of epochs at a steady rate,
            # their weights averaged (`bot.model.averaging`).
            state["average_until"], state["wait"] = epoch + AVERAGE_EPOCHS, 0
            net.optimizer.learning_rate.assign(config.learning_rate * AVERAGE_RATE)
            print(f"averaging the weights of {AVERAGE_EPOCHS} more epochs")
        if epoch >= state.get("average_until", epochs) or (deadline and time.monotonic() >= deadline):
            break
        t0 = time.monotonic()
        logs = run_epoch(epoch)
        epoch += 1
        entry = {
            "epoch": epoch,
            "loss": float(logs["loss"]),
            "val_loss": float(logs["val_loss"]),
            "learning_rate": float(net.optimizer.learning_rate.numpy()),
        }
        best = state["best_val_loss"]
        improved = best is None or entry["val_loss"] < best
        if improved:
            state["best_val_loss"] = best = entry["val_loss"]
            net.save(best_path)
        if "average_until" in state and (average.active or not improved):
            if average.step(net, entry, best, validation, config.batch_size, best_path):
                state["best_val_loss"], improved = entry["val_loss_average"], True
            average.dump(average_path)
        state["seconds"] += time.monotonic() - t0
        state["epoch"] = epoch
        state["history"].append({**entry, "seconds": round(state["seconds"], 1)})
        if improved:
            state["wait"] = 0
        elif "average_until" not in state:
            state["wait"] += 1
            if state["wait"] >= patience:
                print(f"no better validation loss for {patience} epochs: the main run stops")
            elif config.lr_patience and state["wait"] % config.lr_patience == 0:
                rate = slower(net)
                print(f"no better validation loss for {state['wait']} epochs: learning rate {rate:.2g}")
        net.save(ckpt / "model.keras")
        state_path.write_text(
            json.dumps({**state, "config": asdict(config), "vocab": vocab.to_json(), "keys": keys})
        )

    weights_from = best_source(state["history"])
    if "init" in state and average.active and not best_path.is_file():
        # Nothing beat the model it started from on the validation pieces (told no statistics): the result
        # is still the mean of the epochs trained, what this run learnt (a new input, new data).
        with average.worn_by(net):
            net.save(best_path)
        last = state["history"][-1]
        state["best_val_loss"] = last["val_loss_average"]
        weights_from = f"the mean of epochs {last['epoch'] - last['averaged_epochs'] + 1}-{last['epoch']}"
    # Loaded without its optimizer, so the shipped file holds the weights alone (a third of the size).
    best = keras.saving.load_model(best_path, safe_mode=True, compile=False) if best_path.is_file() else net
    if blend is not None:
        # Part of the way from the model it started from to what this run learnt (WiSE-FT, Wortsman et al.
        # 2022): the start's figures on its own music are kept better than by the run's end alone.
        start = M.build(config)
        warm_start(start, M.load(state["init"]).net)
        mixed = [(1 - blend) * a + blend * b for a, b in zip(start.get_weights(), best.get_weights())]
        best.set_weights(mixed)
        net.set_weights(mixed)  # the training network, compiled, scores it
        state["best_val_loss"] = validation_loss(net, validation, config.batch_size)
        weights_from = f"{blend:g} of the way from {state['init']} to {weights_from}"
    card = {
        "name": out.name,
        "summary": (
            f"An LSTM ({config.layers} x {config.hidden}) over frames of sounding pitches (encoding 2), "
            f"trained on {source}."
        ),
        "config": asdict(config),
        "vocab_size": len(vocab),
        "encoding": ENCODING_TEXT + (METER_TEXT if config.meter_input else ""),
        "parameters": M.parameter_count(best),
        "data": {
            "source": source,
            "train_pieces": len(td.train),
            "val_pieces": len(td.valid),
            "train_onsets": sum(vocab.count_onsets(s) for s in td.train),
            "val_onsets": sum(vocab.count_onsets(s) for s in td.valid),
            "train_tokens": int(sum(len(s) for s in td.train)),
            "styles": td.meta.get("styles"),
            "sources": sources,
            "keys": KEY_MODES.get(keys, keys),
            "augmentation": "none"
            if not transpose_keys
            else "random transposition by -6..+5 per window and epoch",
            "regularization": (
                f"dropout {config.dropout}, early stopping on the validation chorales after {patience} "
                "epochs without a better loss"
                + (
                    f", the learning rate halved after every {config.lr_patience}"
                    if config.lr_patience
                    else ""
                )
                + (
                    f", then {AVERAGE_EPOCHS} epochs at {AVERAGE_RATE:g} of the first rate with their weights "
                    "averaged"
                    if config.average
                    else ""
                )
            ),
        },
        "training": {
            "seconds": round(state["seconds"], 1),
            "epochs": state["epoch"],
            "best_val_loss": round(state["best_val_loss"], 4) if state["best_val_loss"] else None,
            "best_weights": weights_from,
            "budget_minutes": minutes,
            "machine": machine_name(),
            "backend": backend.describe(),
            "history": state["history"],
            **({"init": state["init"]} if "init" in state else {}),
            "wall_seconds_this_run": round(time.monotonic() - t_start, 1),
        },
    }
    styles = td.meta.get("styles") or {}
    if "chorale" in styles and len(styles) > 1:
        # Validation was the chorales' held-out pieces alone (`split_by_piece`): `etude eval` scores it there.
        card["data"]["validation_source"] = "chorales"
    M.save(out, best, config, vocab, card)
    return card
