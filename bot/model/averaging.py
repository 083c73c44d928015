"""The mean of the network's weights over the last epochs of training (stochastic weight averaging).

Once the validation loss stops improving, the weights wander around a minimum from epoch to epoch; their
mean sits nearer its centre than any one epoch's weights and usually scores better on pieces the network
has not seen (Izmailov et al. 2018, "Averaging weights leads to wider optima and better generalization").
So, as that paper does, `bot.model.train` ends a run with `AVERAGE_EPOCHS` more epochs from the main
run's last weights at a steady rate (`AVERAGE_RATE` of the first), adds the weights of every epoch from the
first that does not improve, scores the mean on the validation pieces after each, and keeps it as the
best model when it scores better than any epoch. Averaging from the first non-improving epoch of the main
run instead lagged behind: its mean held weights of epochs the network had long improved on (0.9425
against 0.9386 nats per token at the end of such a run).

The network has no batch normalization (the tutorial's head is the one exception, and it does not
average), so the mean needs no statistics recomputed: it is scored as it is.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

AVERAGE_EPOCHS = 8
AVERAGE_RATE = 0.5


class WeightAverage:
    """A running mean of weight lists, kept beside the checkpoint so a resumed run goes on averaging."""

    def __init__(self, mean: list[np.ndarray] | None = None, count: int = 0):
        self.mean = mean
        self.count = count

    @property
    def active(self) -> bool:
        return self.count > 0

    def add(self, weights: list[np.ndarray]) -> None:
        self.count += 1
        if self.mean is None:
            self.mean = [np.array(w, dtype=np.float64) for w in weights]
            return
        for m, w in zip(self.mean, weights, strict=True):
            m += (np.asarray(w, dtype=np.float64) - m) / self.count

    def weights(self, like: list[np.ndarray]) -> list[np.ndarray]:
        """The mean in the dtypes of `like` (the network's own weights)."""
        return [m.astype(w.dtype) for m, w in zip(self.mean, like, strict=True)]

    @contextmanager
    def worn_by(self, net):
        """`net` with the mean's weights inside the block, its own put back after."""
        own = net.get_weights()
        net.set_weights(self.weights(own))
        try:
            yield net
        finally:
            net.set_weights(own)

    def score(self, net, validation, batch_size: int) -> float:
        """The validation loss of the mean."""
        with self.worn_by(net):
            return validation_loss(net, validation, batch_size)

    def step(self, net, entry: dict, best: float, validation, batch_size: int, best_path: Path) -> bool:
        """Add the epoch's weights and score the mean into `entry`; a mean better than `best` is saved at
        `best_path` (and True returned)."""
        self.add(net.get_weights())
        entry["val_loss_average"] = score = self.score(net, validation, batch_size)
        entry["averaged_epochs"] = self.count
        if score < best:
            with self.worn_by(net):
                net.save(best_path)
        return score < best

    def dump(self, path: Path) -> None:
        if self.mean is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, count=self.count, **{f"w{i}": m for i, m in enumerate(self.mean)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> WeightAverage:
        if not path.is_file():
            return cls()
        with np.load(path) as f:
            n = len([k for k in f.files if k.startswith("w")])
            return cls([f[f"w{i}"] for i in range(n)], int(f["count"]))


def validation_loss(net, validation, batch_size: int) -> float:
    """The loss on `validation` as `fit` reports it: (inputs, targets, weights) arrays or a dataset."""
    if isinstance(validation, tuple):
        x, y, w = validation
        logs = net.evaluate(x, y, sample_weight=w, batch_size=batch_size, verbose=0, return_dict=True)
    else:
        logs = net.evaluate(validation, verbose=0, return_dict=True)
    return float(logs["loss"])


def best_source(history: list[dict]) -> str:
    """Which weights the best validation loss of a training history came from: an epoch's or a mean's."""
    if not history:
        return "none"
    scores = [(min(h["val_loss"], h.get("val_loss_average", np.inf)), h) for h in history]
    _, h = min(scores, key=lambda s: s[0])
    if h.get("val_loss_average", np.inf) < h["val_loss"]:
        first = h["epoch"] - h["averaged_epochs"] + 1
        return f"the mean of epochs {first}-{h['epoch']}"
    return f"epoch {h['epoch']}"
