"""What a network is fed in training, epoch by epoch: windows of the pieces' tokens with their metrical
ids (and, for a network told them, the pieces' statistics), cut afresh every epoch; the tutorial's
one-target windows; and a new network's start from a trained one's weights."""

from __future__ import annotations

import numpy as np

from bot.errors import BadData
from bot.model import backend
from bot.model import network as M
from bot.model.conditioning import DROP, STATISTICS
from bot.music.corpus import transpose_windows, window_counts, windows
from bot.music.encoding import Vocabulary
from bot.music.meter import Meter, stream_meter_ids


def meter_inputs(vocab: Vocabulary, seqs, meters: list | None) -> list[np.ndarray]:
    """The metrical input of every token of each whole piece (`bot.music.meter.stream_meter_ids`), from
    the pieces' meters as `corpus_tokens` keeps them; 4/4 from the first note where none is kept (a
    tokens file from before meters were)."""
    table = vocab.shift_table()
    meters = meters if meters and len(meters) == len(seqs) else [None] * len(seqs)
    return [stream_meter_ids(table[s], Meter.from_json(m) if m else Meter()) for s, m in zip(seqs, meters)]


def warm_start(net, source) -> None:
    """`net` given the weights of `source`, a trained network with the same layers: each layer's by name.
    A layer that reads more inputs than the source's (the first LSTM, told statistics the source was not)
    keeps the source's rows for the inputs both read and zeros for the new ones, so it computes what the
    source did until it is trained."""
    for layer in net.layers:
        try:
            other = source.get_layer(layer.name)
        except ValueError:
            continue
        weights = []
        for w, o in zip(layer.get_weights(), other.get_weights(), strict=True):
            if w.shape != o.shape and not (w.ndim == 2 and w.shape[1:] == o.shape[1:] and len(w) > len(o)):
                raise BadData(f"cannot start {layer.name} {w.shape} from {o.shape}")
            grown = np.zeros_like(w)
            grown[: len(o)] = o
            weights.append(grown)
        layer.set_weights(weights)


# -- what one epoch sees ---------------------------------------------------------------------------------
def step_arrays(
    config: M.Config,
    vocab: Vocabulary,
    seqs,
    rng: np.random.Generator | None,
    transpose_keys: bool = False,
    meters: list[np.ndarray] | None = None,
    stats: list[np.ndarray] | None = None,
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray, np.ndarray]:
    """(inputs, targets, weights) of one epoch for an every-step network, as whole arrays.

    With `rng` (training) the windows are cut at a random offset (with `transpose_keys` each moved by a
    random transposition) and shuffled, so every epoch sees new windows; without it (validation) they are
    the same each time. Padding targets weigh 0. A network with a metrical input takes [tokens, meter
    ids] (`meters`: `meter_inputs` of the same pieces), cut at the same places; one told statistics takes
    each window's piece's (`stats`: `conditioning.statistics` of each piece) as a third, left out (zeros)
    in `conditioning.DROP` of the training windows and in every validation window.
    """
    offset = int(rng.integers(config.seq_len)) if rng is not None else 0
    w = windows(seqs, config.seq_len, offset)
    m = windows(meters, config.seq_len, offset) if config.meter_input else None
    if rng is not None and transpose_keys:
        w = transpose_windows(w, vocab, rng)
    told = None
    if config.stats_input:
        counts = window_counts(seqs, config.seq_len, offset)
        told = (
            np.repeat(np.stack(stats), counts, axis=0) if rng is not None else np.zeros((len(w), STATISTICS))
        )
    if rng is not None:
        order = rng.permutation(len(w))
        w = w[order]
        m = m[order] if m is not None else None
        if told is not None:
            told = told[order]
            told[rng.random(len(told)) < DROP] = 0.0
    x, y = w[:, :-1], w[:, 1:]
    inputs = [x, m[:, :-1]] if m is not None else x
    if told is not None:
        inputs.append(np.repeat(told.astype(np.float32)[:, None], x.shape[1], axis=1))
    return inputs, y, (y != 0).astype("float32")


def last_dataset(config: M.Config, vocab: Vocabulary, seqs, seed: int, augment: bool, limit=None):
    """The tutorial's scheme as a Keras dataset: every position a window of seq_len scaled tokens and one
    target. Too large to hold as one array (a window per token), so it is cut batch by batch."""
    keras = backend.keras()
    rng = np.random.default_rng(seed)
    idx = [(i, t) for i, s in enumerate(seqs) for t in range(1, len(s))]
    order = rng.permutation(len(idx))[:limit] if limit else rng.permutation(len(idx))
    idx = [idx[j] for j in order]

    class Last(keras.utils.PyDataset):
        def __len__(self):
            return max(1, -(-len(idx) // config.batch_size))

        def __getitem__(self, i):
            rows = idx[i * config.batch_size : (i + 1) * config.batch_size]
            w = np.stack([tutorial_window(seqs[s], t, config.seq_len) for s, t in rows])
            y = np.array([seqs[s][t] for s, t in rows], np.int32)
            if augment:
                both = transpose_windows(np.concatenate([w, y[:, None]], 1), vocab, rng)
                w, y = both[:, :-1], both[:, -1]
            return (w[..., None] / float(len(vocab))).astype("float32"), y

    return Last()


def tutorial_window(seq: np.ndarray, t: int, length: int) -> np.ndarray:
    """The `length` tokens before position t, left-padded with `<pad>`."""
    w = seq[max(0, t - length) : t]
    return np.pad(w, (length - len(w), 0))
