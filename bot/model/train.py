"""Fit a network on tokenised pieces: progress bar, validation loss per epoch, early stopping, resume."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bot.model import backend
from bot.model import network as M
from bot.music.corpus import KEY_MODES, token_data, transpose_windows, windows
from bot.music.encoding import Vocabulary

log = logging.getLogger(__name__)


def machine_name() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu})"


ENCODING_TEXT = (
    "Encoding 2: a frame at every time the set of sounding pitches changes, listing every sounding pitch "
    "as a new attack (P) or held (H), after the time since the previous frame (12 steps a beat: "
    "sixteenths and triplets exact) and before a closing bar (| or |F at a phrase end, the fermatas). "
    "A piece opens with <start>, a style token and its mode, and closes with <end>. Pitches cover the piano."
)


def make_datasets(
    config: M.Config,
    vocab: Vocabulary,
    train_seqs,
    val_seqs,
    seed: int = 0,
    val_windows: int = 2048,
    transpose_keys: bool = False,
):
    """Keras datasets for the config's target scheme; training ones are re-cut every epoch (and moved to
    random keys with `transpose_keys`)."""
    import keras

    if config.targets == "every_step":

        class Steps(keras.utils.PyDataset):
            def __init__(self, seqs, augment):
                super().__init__()
                self.seqs, self.augment, self.epoch = seqs, augment, 0
                self.rng = np.random.default_rng(seed)
                self._cut()

            def _cut(self):
                offset = int(self.rng.integers(config.seq_len)) if self.augment else 0
                w = windows(self.seqs, config.seq_len, offset)
                if self.augment:
                    if transpose_keys:
                        w = transpose_windows(w, vocab, self.rng)
                    w = w[self.rng.permutation(len(w))]
                self.w = w

            def __len__(self):
                return max(1, -(-len(self.w) // config.batch_size))

            def __getitem__(self, i):
                b = self.w[i * config.batch_size : (i + 1) * config.batch_size]
                x, y = b[:, :-1], b[:, 1:]
                return x, y, (y != 0).astype("float32")

            def on_epoch_end(self):
                if self.augment:
                    self._cut()

        return Steps(train_seqs, True), Steps(val_seqs, False)

    # The tutorial's scheme: every position is a window of seq_len scaled tokens and one target.
    def pairs(seqs, rng, limit=None):
        idx = [(i, t) for i, s in enumerate(seqs) for t in range(1, len(s))]
        order = rng.permutation(len(idx))
        if limit:
            order = order[:limit]
        return [idx[j] for j in order]

    class Last(keras.utils.PyDataset):
        def __init__(self, seqs, augment, limit=None):
            super().__init__()
            self.seqs, self.augment = seqs, augment
            self.rng = np.random.default_rng(seed)
            self.idx = pairs(seqs, self.rng, limit)

        def __len__(self):
            return max(1, -(-len(self.idx) // config.batch_size))

        def __getitem__(self, i):
            rows = self.idx[i * config.batch_size : (i + 1) * config.batch_size]
            w = np.stack([tutorial_window(self.seqs[s], t, config.seq_len) for s, t in rows])
            y = np.array([self.seqs[s][t] for s, t in rows], np.int32)
            if self.augment and transpose_keys:
                both = transpose_windows(np.concatenate([w, y[:, None]], 1), vocab, self.rng)
                w, y = both[:, :-1], both[:, -1]
            return (w[..., None] / float(len(vocab))).astype("float32"), y

    return Last(train_seqs, True), Last(val_seqs, False, val_windows)


def _style_counts(pieces) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in pieces:
        style = p.meta.get("style", "other")
        counts[style] = counts.get(style, 0) + 1
    return counts


def tutorial_window(seq: np.ndarray, t: int, length: int) -> np.ndarray:
    """The `length` tokens before position t, left-padded with `<pad>`."""
    w = seq[max(0, t - length) : t]
    return np.pad(w, (length - len(w), 0))


def budget_callback(seconds: float | None, already: float = 0.0):
    """A callback that stops training once a wall-clock budget is spent, checked after every batch."""
    import keras

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0 = time.monotonic() - already

        def on_train_batch_end(self, batch, logs=None):
            if seconds and time.monotonic() - self.t0 > seconds:
                self.model.stop_training = True

    return Budget()


def train(
    data: str,
    out: Path,
    preset: str = "etude",
    minutes: float | None = None,
    epochs: int = 100,
    patience: int = 4,
    limit: int | None = None,
    fresh: bool = False,
    steps_per_epoch: int | None = None,
    overrides: dict | None = None,
    verbose: int = 1,
    keys: str = "reference",
) -> dict:
    """Train a model on `data` into the folder `out`; returns its card.

    A run that stops (budget, Ctrl-C, a crash) resumes from `out/checkpoint` unless `fresh`.
    """
    keras = backend.keras()

    t_start = time.monotonic()
    ckpt = out / "checkpoint"
    state_path = ckpt / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() and not fresh else None
    if state:
        config = M.Config.from_dict(state["config"])
        keys = state.get("keys", keys)
        vocab, train_p, val_p, train_seqs, val_seqs = token_data(
            data, limit, keys, Vocabulary.from_json(state["vocab"])
        )
        net = keras.saving.load_model(ckpt / "model.keras", safe_mode=True)
        print(f"resuming from epoch {state['epoch']} (best validation loss {state['best_val_loss']:.4f})")
    else:
        vocab, train_p, val_p, train_seqs, val_seqs = token_data(data, limit, keys)
        config = M.preset(preset, vocab_size=len(vocab), **(overrides or {}))
        net = M.build(config)
        M.compile_model(net, config)
        state = {"epoch": 0, "best_val_loss": None, "seconds": 0.0, "history": [], "wait": 0}
    train_ds, val_ds = make_datasets(config, vocab, train_seqs, val_seqs, transpose_keys=keys == "transpose")
    print(
        f"{len(train_p)} training pieces, {len(val_p)} validation pieces, vocabulary {len(vocab)}, "
        f"{M.parameter_count(net):,} parameters ({config.preset})"
    )

    ckpt.mkdir(parents=True, exist_ok=True)
    budget_s = minutes * 60 if minutes else None
    best_path = ckpt / "best.keras"

    class Checkpoint(keras.callbacks.Callback):
        """After each epoch: keep the best weights, save everything needed to resume, stop early."""

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            val = float(logs["val_loss"])
            state["seconds"] += time.monotonic() - self.t0
            state["epoch"] = epoch + 1
            state["history"].append(
                {
                    "epoch": epoch + 1,
                    "loss": float(logs["loss"]),
                    "val_loss": val,
                    "seconds": round(state["seconds"], 1),
                }
            )
            if state["best_val_loss"] is None or val < state["best_val_loss"]:
                state["best_val_loss"], state["wait"] = val, 0
                self.model.save(best_path)
            else:
                state["wait"] += 1
                if state["wait"] >= patience:
                    print(f"no better validation loss for {patience} epochs: stopping")
                    self.model.stop_training = True
            self.model.save(ckpt / "model.keras")
            state_path.write_text(
                json.dumps({**state, "config": asdict(config), "vocab": vocab.to_json(), "keys": keys})
            )

    start_epoch = state["epoch"]
    if budget_s is not None and state["seconds"] >= budget_s:
        print("training budget already spent")
    elif state["wait"] < patience:
        net.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            initial_epoch=start_epoch,
            steps_per_epoch=steps_per_epoch,
            verbose=verbose,
            callbacks=[Checkpoint(), budget_callback(budget_s, state["seconds"])],
        )

    # Loaded without its optimizer, so the shipped file holds the weights alone (a third of the size).
    best = keras.saving.load_model(best_path, safe_mode=True, compile=False) if best_path.is_file() else net
    card = {
        "name": out.name,
        "summary": (
            f"An LSTM ({config.layers} x {config.hidden}) over frames of sounding pitches (encoding 2), "
            f"trained on {data}."
        ),
        "config": asdict(config),
        "vocab_size": len(vocab),
        "encoding": ENCODING_TEXT,
        "parameters": M.parameter_count(best),
        "data": {
            "source": data,
            "train_pieces": len(train_p),
            "val_pieces": len(val_p),
            "train_events": sum(len(p.events) for p in train_p),
            "val_events": sum(len(p.events) for p in val_p),
            "train_onsets": int(sum(vocab.count_onsets(s) for s in train_seqs)),
            "val_onsets": int(sum(vocab.count_onsets(s) for s in val_seqs)),
            "train_tokens": int(sum(len(s) for s in train_seqs)),
            "styles": _style_counts(train_p),
            "keys": KEY_MODES[keys],
            "regularization": f"dropout {config.dropout}, early stopping on the validation chorales",
        },
        "training": {
            "seconds": round(state["seconds"], 1),
            "epochs": state["epoch"],
            "best_val_loss": round(state["best_val_loss"], 4) if state["best_val_loss"] else None,
            "budget_minutes": minutes,
            "machine": machine_name(),
            "history": state["history"],
            "wall_seconds_this_run": round(time.monotonic() - t_start, 1),
        },
    }
    M.save(out, best, config, vocab, card)
    return card
