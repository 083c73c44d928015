"""The network is told where the beat and the bar are: each training score's meter read from its time
signature and first bar, counted through the encoding to one metrical id per token, and counted the same
way by every place that steps the network (the NumPy steps, the sampler's primer)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.model.network import load
from bot.model.sample import Request, primer_bar_starts
from bot.model.steps import NumpySteps
from bot.music.encoding import Vocabulary
from bot.music.events import GRID, Event
from bot.music.meter import METER_IDS, METER_QUARTERS, Meter, meter_ids, stream_meter_ids
from bot.music.scores import piece_from_json, piece_from_stream, piece_to_json

pytestmark = pytest.mark.timeout(300)


def score(signature: str, pickup: float, bars: int = 3):
    """A one-part music21 score in `signature` whose first bar is a pickup of `pickup` quarters (0: none),
    then `bars` full bars of quarter notes climbing a step each."""
    from music21 import meter, note, stream

    ts = meter.TimeSignature(signature)
    length = ts.barDuration.quarterLength
    part = stream.Part()
    pitch = 60
    for number in range(bars + (1 if pickup else 0)):
        m = stream.Measure(number=number if pickup else number + 1)
        if number == 0:
            m.append(meter.TimeSignature(signature))
        fill = pickup if pickup and number == 0 else length
        if pickup and number == 0:
            m.paddingLeft = length - pickup
        while fill > 0:
            m.append(note.Note(pitch, quarterLength=1.0))
            pitch, fill = pitch + 1, fill - 1.0
        part.append(m)
    return stream.Score([part])


@pytest.mark.parametrize(
    "signature,pickup,bar,downbeat",
    [("4/4", 0.0, 4.0, 0.0), ("3/4", 0.0, 3.0, 0.0), ("6/8", 0.0, 3.0, 0.0), ("4/4", 1.0, 4.0, 1.0)],
)
def test_a_scores_meter_is_read_and_counted_through_the_encoding(signature, pickup, bar, downbeat):
    """The meter a training score is learnt in: its time signature, and its downbeats after a pickup.
    Every frame of the encoded piece carries the position of its own time in the bar, and the decoded
    notes fall where those positions say."""
    piece = piece_from_stream(score(signature, pickup), "test")
    n, d, first = piece.meta["meter"]
    meter = Meter(n, d, first)
    assert (meter.bar, meter.downbeat) == (bar, downbeat)
    assert piece_from_json(piece_to_json(piece)).meta["meter"] == piece.meta["meter"]  # the cache keeps it

    vocab = Vocabulary()
    ids = np.array(vocab.encode(piece.events, mode="major", style="chorale"))
    meter_of_token = stream_meter_ids(vocab.shift_table()[ids], meter)
    closes = [i for i, t in enumerate(ids) if vocab.is_close(t)]
    onsets = sorted({e.onset for e in vocab.decode(ids)})
    assert len(closes) == len(onsets)
    for i, onset in zip(closes, onsets, strict=True):
        assert meter_of_token[i] == meter_ids(np.array(meter.position(onset)), meter.bar_steps)
    # The downbeats are the frames at position 0 of the bar.
    downbeats = [on for i, on in zip(closes, onsets, strict=True) if meter_of_token[i] % (8 * GRID) == 0]
    assert downbeats == [t for t in onsets if (t - downbeat) % bar == 0]


def test_meter_ids_tell_bars_and_positions_apart():
    bars = [3 * GRID, 4 * GRID, 6 * GRID]
    seen = {int(meter_ids(np.array(p), b)) for b in bars for p in range(b)}
    assert len(seen) == sum(bars) and max(seen) < METER_IDS  # one id for each position of each bar
    long_bar = 12 * GRID  # longer than METER_QUARTERS quarters: counted as that many, late beats as the last
    assert int(meter_ids(np.array(long_bar - 1), long_bar)) < METER_IDS
    assert int(meter_ids(np.array(0), long_bar)) == (METER_QUARTERS - 1) * METER_QUARTERS * GRID


def test_numpy_steps_hear_the_meter_the_network_learnt(composer):
    """The harmonizer's NumPy steps count the bar as training did: their distribution is the network's
    own, fed the same metrical ids, in 3/4 with a pickup."""
    model = composer.model
    assert model.config.meter_input
    meter = Meter(3, 4, 1.0)
    events = [Event(float(t), 1.0, (60 + t % 7,)) for t in range(10)]
    ids = np.array(model.vocab.encode(events, mode="major", style="chorale"))
    steps = NumpySteps(model, k=2, meter=meter)
    got = [steps.start(ids[:1])]
    for t in ids[1:-1]:
        got.append(steps.feed(np.array([t, t]), np.arange(2)))
    logits = np.asarray(model.net(model.inputs(ids[None, :-1], [meter]), training=False))[0]
    want = logits - logits.max(1, keepdims=True)
    want = want - np.log(np.exp(want).sum(1, keepdims=True))
    assert np.allclose(np.stack(got)[:, 0], want, atol=1e-3)
    # Told another meter, the same notes are heard otherwise.
    other = np.asarray(model.net(model.inputs(ids[None, :-1], [Meter()]), training=False))[0]
    assert not np.allclose(other, logits, atol=1e-4)


def test_the_sampler_counts_a_cut_primer_from_its_last_frame(composer):
    """A seed's primer, cut to its last frames, still starts where the seed's bar says: the position of
    its last frame, back by the time the kept frames span."""
    vocab = composer.vocab
    meter = Meter(3, 4, 1.0)  # a pickup of two beats
    events = [Event(0.5 * t, 0.5, (60 + t % 5,)) for t in range(40)]
    ids, last = vocab.encode_frames(events, vocab.head("major", "chorale"), end=False)
    request = Request(tuple(ids), bar=meter.bar_steps, bar_pos=meter.position(last))
    whole = primer_bar_starts(vocab, [request], [list(ids)])
    assert whole == [meter.position(0.0)]
    kept = vocab.trim(ids, 30)
    dropped = sum(vocab.shift_table()[ids]) - sum(vocab.shift_table()[kept])
    assert primer_bar_starts(vocab, [request], [kept]) == [meter.position(dropped / GRID)]


def test_the_shipped_model_loads_with_or_without_a_metrical_input():
    """Networks trained before the metrical input read the token alone; their config says so."""
    model = load()
    x = np.array([[model.vocab.start, model.vocab.shift_base]])
    inputs = model.inputs(x)
    assert isinstance(inputs, list) == model.config.meter_input
    assert np.asarray(model.net(inputs, training=False)).shape == (1, 2, len(model.vocab))
