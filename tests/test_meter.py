"""A seed's meter and bar phase: read from its time signatures, estimated from its onsets, written back,
and carried into the continuation: its grid kept by the sampler, its bars by the file written without it."""

from __future__ import annotations

import numpy as np
import pytest

from bot.model.sample import Request
from bot.music.events import GRID, Event
from bot.music.meter import Meter, estimate_meter, meter_of, seed_grid
from bot.music.midi import read_midi
from bot.music.midi_out import midi_bytes, time_signatures
from bot.options import Options

pytestmark = pytest.mark.timeout(300)


def signature(numerator: int, denominator: int, delta: int = 0) -> bytes:
    import test_midi as tm

    return tm.meta(0x58, bytes([numerator, denominator.bit_length() - 1, 24, 8]), delta)


def read_meter(data: bytes) -> Meter:
    piece = read_midi(data)
    return meter_of(piece.events, piece.meta["time_signatures"], piece.meta["tempo_changes"])


def file_with(signatures: bytes, beats: int = 12) -> bytes:
    """Quarter notes (96 ticks a beat) under a first track of time signatures."""
    import test_midi as tm

    return tm.smf([signatures, tm.melody(beats, first=60)])


@pytest.mark.parametrize("numerator,denominator,bar", [(4, 4, 4.0), (3, 4, 3.0), (6, 8, 3.0)])
def test_the_time_signature_is_read_and_says_where_each_note_falls(numerator, denominator, bar):
    meter = read_meter(file_with(signature(numerator, denominator)))
    assert (meter.name, meter.bar, meter.downbeat, meter.source) == (
        f"{numerator}/{denominator}",
        bar,
        0,
        "file",
    )
    assert meter.assumed == ""
    # Beat 7 is in the third bar of 3/4 and 6/8 (at 1 quarter into it), in the second of 4/4 (at 3).
    assert meter.in_bar(7.0) == 7.0 % bar and meter.bar_start(7.0) == 7.0 - 7.0 % bar


def test_a_pickup_bar_puts_the_downbeats_after_it():
    # A one-beat bar of 1/4, then 4/4 from beat 1: the downbeats are at 1, 5, 9, ...
    meter = read_meter(file_with(signature(1, 4) + signature(4, 4, delta=96)))
    assert (meter.name, meter.downbeat) == ("4/4", 1.0)
    assert [meter.in_bar(t) for t in (0.0, 1.0, 4.0, 5.0, 6.5)] == [3.0, 0.0, 3.0, 0.0, 1.5]
    assert meter.bar_start(6.5) == 5.0


def test_the_meter_in_force_at_the_end_is_the_one_continued():
    meter = read_meter(file_with(signature(4, 4) + signature(3, 4, delta=96 * 8)))
    assert (meter.name, meter.downbeat) == ("3/4", 2.0)  # a 3/4 bar starts at beat 8: 8 % 3 == 2


def test_written_signatures_read_back_with_their_pickup():
    for meter in (Meter(3, 4, 0.0), Meter(4, 4, 1.0), Meter(6, 8, 0.5), Meter(4, 4, 2.5)):
        notes = [Event(i * 0.5, 0.5, (60 + i % 5,)) for i in range(24)]
        assert read_meter(midi_bytes(notes, meter=meter)) == meter
    assert time_signatures(Meter(4, 4, 1.0)) == [(0, 1, 4), (480, 4, 4)]
    assert time_signatures(Meter(6, 8, 0.5)) == [(0, 1, 8), (240, 6, 8)]


def accented(bar: int, downbeat: int, bars: int = 8) -> list[Event]:
    """A long bass note and a chord on every downbeat, light quarter notes on the other beats."""
    out = [Event(0.0, 1.0, (72,))] if downbeat else []
    for b in range(bars):
        start = downbeat + b * bar
        out.append(Event(float(start), 1.0 * bar, (48, 64, 67)))
        out += [Event(float(start + k), 1.0, (72,)) for k in range(1, bar)]
    return out


def test_without_a_signature_the_downbeat_and_meter_come_from_the_onsets():
    assert estimate_meter(accented(4, 1)) == Meter(4, 4, 1.0, "onsets")
    assert estimate_meter(accented(3, 2)) == Meter(3, 4, 2.0, "onsets")
    import test_midi as tm

    data = tm.smf([b"".join(tm.note(60 + i % 3, 96) for i in range(16))])  # no time signature
    meter = read_meter(data)
    assert meter.source == "onsets" and meter.name == "4/4"
    assert "no time signature" in meter.assumed and "4/4" in meter.assumed


@pytest.mark.parametrize(
    "events,tempo_changes",
    [
        # free rubato: onsets anywhere
        ([Event(float(t), 0.3, (60,)) for t in np.cumsum(np.random.default_rng(1).uniform(0.3, 1.1, 40))], 0),
        # one long chord
        ([Event(0.5, 30.0, (48, 52, 55, 60))], 0),
        # steady onsets, but the tempo changes on every beat
        ([Event(float(i), 1.0, (60,)) for i in range(32)], 32),
    ],
)
def test_no_steady_beat_continues_in_four_four_from_the_first_note(events, tempo_changes):
    meter = estimate_meter(events, tempo_changes)
    assert (meter.name, meter.source, meter.downbeat) == ("4/4", "unsteady", events[0].onset % 4)
    assert "no steady beat" in meter.assumed


def test_the_grid_a_seed_keeps():
    eighths = [Event(i * 0.5, 0.5, (60,)) for i in range(20)]
    sixteenths = [Event(i * 0.25, 0.25, (60,)) for i in range(20)]
    triplets = [Event(i / 3, 1 / 3, (60,)) for i in range(20)]
    assert (seed_grid(eighths), seed_grid(sixteenths), seed_grid(triplets)) == (6, 3, 0)
    # One stray onset in twenty keeps the grid (95%); three do not (85%).
    assert seed_grid([*eighths[:19], Event(9.75, 0.25, (60,))]) == 6
    assert seed_grid([*eighths[:17], *(Event(9 + k + 0.25, 0.25, (60,)) for k in range(3))]) == 3


# -- carried into the continuation ---------------------------------------------------------------------
# A tune on an eighth-note grid: quarters and pairs of eighths over a chord on every bar's first beat.
RHYTHM = (1.0, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0)  # two bars of 4/4
TUNE = (60, 62, 64, 65, 67, 65, 64, 62, 64, 60, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62)


def eighth_seed(bars: int = 8, meter_bar: float = 4.0) -> list[Event]:
    out, t, i = [], 0.0, 0
    while t < bars * meter_bar - 1e-9:
        d = RHYTHM[i % len(RHYTHM)]
        chord = (48, 55) if t % meter_bar == 0 else ()
        out.append(Event(t, d, (*chord, TUNE[i % len(TUNE)])))
        t, i = t + d, i + 1
    return out


def off_grid(events, start: int = 0) -> list[float]:
    return [e.onset for e in events[start:] if round(e.onset * GRID) % (GRID // 2)]


def test_a_seed_on_an_eighth_grid_is_continued_on_it(composer):
    seed = composer.seed(midi_bytes(eighth_seed()), "eighths")
    assert seed.grid == GRID // 2 and seed.meter.name == "4/4"
    left = 0
    for rng_seed in range(4):
        piece = composer.compose_one(Options(length=60, rng_seed=rng_seed, include_seed=True), seed)
        assert off_grid(piece.events, piece.seed_events) == [], rng_seed
        # The same request without the grid rule: the network alone leaves the grid.
        key, _, primer, _, _ = composer.plan(piece.options, seed)
        free = composer.sampler.sample(
            [Request(primer, 60, 1.0, piece.options.top_p, rng_seed, grid=0, short_term=0.0)]
        )[0]
        left += bool(off_grid(composer.vocab.decode(primer + tuple(free))))
    assert left > 0


def test_the_mid_without_the_seed_starts_on_the_seeds_bar_phase(composer):
    # 3/4 with a one-beat pickup: bars start at 1, 4, 7, ... and the seed stops in the middle of one.
    events = [e for e in eighth_seed(4, 3.0) if e.onset < 9.5]
    seed = composer.seed(midi_bytes(events, meter=Meter(3, 4, 1.0)), "waltz")
    assert (seed.meter.name, seed.meter.downbeat) == ("3/4", 1.0)
    for rng_seed in (1, 2):
        both = composer.compose_one(Options(length=16, rng_seed=rng_seed, include_seed=True), seed)
        alone = composer.compose_one(Options(length=16, rng_seed=rng_seed), seed)
        first = both.events[both.seed_events].onset
        phase = (first - 1.0) % 3.0
        assert alone.events[0].onset == pytest.approx(phase)  # a rest up to where the seed's bar goes on
        assert [e.pitches for e in alone.events] == [e.pitches for e in both.events[both.seed_events :]]
        back = read_midi(alone.midi())
        assert back.meta["time_signatures"] == [(0.0, 3, 4)]
        assert back.events[0].onset == pytest.approx(phase)
        assert alone.said == []  # the meter was the file's own
    assert read_midi(both.midi()).meta["time_signatures"] == [(0.0, 1, 4), (1.0, 3, 4)]


def test_a_seed_without_a_time_signature_continues_in_four_four_and_says_so(composer):
    import test_midi as tm

    data = tm.smf([b"".join(tm.note(60 + (0, 4, 7)[i % 3], 48) for i in range(24))])
    seed = composer.seed(data, "plain")
    piece = composer.compose_one(Options(length=8, rng_seed=1), seed)
    assert piece.meter.name == "4/4" and piece.meter.downbeat == 0
    assert piece.said == [
        "the seed has no time signature: continued in 4/4 with bars where its notes suggest"
    ]
