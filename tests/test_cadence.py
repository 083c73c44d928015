"""How the shipped model's pieces end and lead their voices: a V-I or IV-I cadence onto a root-position
tonic triad within N to N + max(8, N/10) onsets, no parallel fifths or octaves, frames that hold only
what sounds. Everything is read back from the sampled tokens with `bot.music.analysis` and the statistics of
`bot.music.stats`."""

from __future__ import annotations

import numpy as np
import pytest

from bot.model.composer import Composer
from bot.model.sample import Request
from bot.music import analysis
from bot.music import stats as S
from bot.music.encoding import PIANO_LOW
from bot.music.keys import Key
from bot.music.midi_out import midi_bytes
from bot.options import Options, cadence_margin

pytestmark = pytest.mark.timeout(600)
SEEDS = range(7000, 7006)
# What the network writes in.
REFERENCE_KEYS = {"major": Key(0, "major"), "minor": Key(9, "minor")}


@pytest.fixture(scope="module")
def shipped() -> Composer:
    return Composer()  # models/etude-chorales


def ends_on_a_cadence(events, keys) -> bool:
    """The last onset sounds a root-position tonic triad of one of `keys`, the harmony before is V or IV."""
    ms = analysis.moments(events)
    hs = analysis.harmonies(ms, max(e.onset + e.duration for e in events))
    last = analysis.chord_of(ms[-1].sounding)
    return (
        last is not None
        and len(hs) >= 2
        and any(analysis.is_tonic_triad(last, k) and analysis.leads_to(hs[-2].chord, k.tonic) for k in keys)
    )


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_unseeded_pieces_end_with_a_cadence_onto_the_tonic(shipped, mode):
    vocab, n = shipped.vocab, 60
    streams = shipped.sampler.sample([Request(tuple(vocab.head(mode)), n, 1.0, 0.95, s) for s in SEEDS])
    for tokens in streams:
        assert n <= vocab.count_onsets(tokens) <= n + cadence_margin(n)
        assert tokens[-1] == vocab.end
        # The network writes in C major or A minor; a piece ends in whichever of the two its notes say.
        assert ends_on_a_cadence(vocab.decode(tokens), REFERENCE_KEYS.values())


def test_composed_pieces_end_with_a_cadence_in_their_own_key(shipped):
    # As `etude eval` hears them: moved into the key the RNG seed drew, the key estimated from the notes.
    pieces = shipped.compose([(Options(length=80, rng_seed=s), None) for s in SEEDS])
    ends = [S.cadences(p.events)[1] for p in pieces]
    assert sum(ends) >= len(ends) - 1, ends
    for p in pieces:
        assert 80 <= p.onsets <= 80 + cadence_margin(80)


def test_a_seed_is_continued_to_a_cadence(shipped, chorales):
    seed = shipped.seed(midi_bytes(chorales[2].events[:40], tempo=80), "chorale")
    for s in SEEDS[:3]:
        key, _, primer, _, _ = shipped.plan(Options(rng_seed=s), seed)
        tokens = shipped.sampler.sample([Request(primer, 30, 1.0, 0.95, s)])[0]
        assert 30 <= shipped.vocab.count_onsets(tokens) <= 30 + cadence_margin(30)
        # The primer's frames sound on into the continuation: decode them together.
        events = shipped.vocab.decode([*primer, *tokens])
        assert ends_on_a_cadence(events, REFERENCE_KEYS.values())


def test_no_parallel_fifths_or_octaves_and_holds_only_of_sounding_pitches(shipped):
    vocab = shipped.vocab
    reqs = [Request(tuple(vocab.head(m)), 120, 1.0, 0.95, s) for m in ("major", "minor") for s in SEEDS]
    changes = 0
    for tokens in shipped.sampler.sample(reqs):
        ms = analysis.moments(vocab.decode(tokens))
        assert S.parallel_perfects_per_change(ms) in (0.0, None)
        # The outer voices alone, frame by frame as a listener follows them: never a fifth or an octave
        # reached in similar motion from the same interval.
        for a, b in zip(ms, ms[1:]):
            if len(a.sounding) < 2 or len(b.sounding) < 2 or len(a.sounding) != len(b.sounding):
                continue
            changes += 1
            (lo_a, hi_a), (lo_b, hi_b) = (a.sounding[0], a.sounding[-1]), (b.sounding[0], b.sounding[-1])
            same = (hi_a - lo_a) % 12 == (hi_b - lo_b) % 12 in (0, 7)
            assert not (same and (hi_b - hi_a) * (lo_b - lo_a) > 0 and hi_a % 12 != hi_b % 12)
        sounding: set[int] = set()
        frame: set[int] = set()
        for t in tokens:
            if vocab.is_hold(t):
                assert PIANO_LOW + t - vocab.hold_base in sounding
                frame.add(PIANO_LOW + t - vocab.hold_base)
            elif vocab.is_attack(t):
                frame.add(PIANO_LOW + t - vocab.pitch_base)
            elif vocab.is_close(t):
                sounding, frame = frame, set()
    assert changes > 500  # the check saw real four-part writing, not textures that skip it


def test_chord_table_is_chord_of():
    table = analysis.chord_table()
    rng = np.random.default_rng(0)
    for mask in [*range(1, 4096, 7), *rng.integers(1, 4096, 200)]:
        pcs = [pc for pc in range(12) if mask >> pc & 1]
        for bass in pcs:
            sounding = [bass + 36, *(pc + 60 for pc in pcs)]
            assert table[mask * 12 + bass] == analysis.chord_id(analysis.chord_of(sounding)), (pcs, bass)
    assert table[0b10010001 * 12] == analysis.chord_id(analysis.Chord(0, "major", 0, frozenset({0, 4, 7})))
