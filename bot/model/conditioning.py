"""The seed's statistics as an input: a third way for the network to listen to the seed.

Performance RNN (Simon & Oore, Magenta 2017) feeds the network, at every step, a piece's note density and
pitch-class histogram: computed from the whole piece in training, from the primer (or the user) when
sampling. The network learns to write music with those statistics, so a continuation told a seed's
statistics is pulled toward them from its first note, whatever its LSTM state has kept of the seed.

`STATISTICS` numbers describe a stretch of music, all from its tokens (so training and sampling read them
the same way, in the reference key every piece is moved to): its pitch-class histogram (12), how many
onsets a beat and how many notes an onset (logs), its register (mean pitch and spread, in octaves from
middle C), and a last 1 that says they are present. All zeros is "not told": training leaves out a piece's
statistics in `DROP` of its windows, so the same network writes without them (an unseeded piece, the
harmonizer), and its bits per note on the validation pieces are measured without them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bot.music.encoding import Vocabulary

STATISTICS = 17
DROP = 0.5  # the share of training windows told nothing
MIN_ONSETS = 4  # a stretch with fewer says too little: nothing is told


def statistics(vocab: Vocabulary, tokens: Sequence[int]) -> np.ndarray:
    """The statistics (`STATISTICS` float32) of the music in `tokens` (a piece or a primer, its head and
    `<end>` included or not); zeros when it holds fewer than `MIN_ONSETS` onsets."""
    events = vocab.decode([int(t) for t in tokens])
    out = np.zeros(STATISTICS, np.float32)
    if len(events) < MIN_ONSETS:
        return out
    pitches = np.array([p for e in events for p in e.pitches], np.float64)
    classes = np.bincount(pitches.astype(int) % 12, minlength=12)
    span = max(events[-1].onset + events[-1].duration - events[0].onset, 1.0)
    out[:12] = classes / classes.sum()
    out[12] = np.log(len(events) / span)
    out[13] = np.log(len(pitches) / len(events))
    out[14] = (pitches.mean() - 60.0) / 12.0
    out[15] = pitches.std() / 12.0
    out[16] = 1.0
    return out


def told(stats: np.ndarray | Sequence[float] | None, rows: int) -> np.ndarray:
    """(rows, STATISTICS) float32: `stats` for every row, or zeros ("not told") when None or empty."""
    if stats is None or len(stats) == 0:
        return np.zeros((rows, STATISTICS), np.float32)
    return np.tile(np.asarray(stats, np.float32)[None], (rows, 1))
