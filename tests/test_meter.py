"""A seed's meter and bar phase: read from its time signatures, estimated from its onsets, written back."""

from __future__ import annotations

import numpy as np
import pytest

from bot.music.events import Event
from bot.music.meter import Meter, estimate_meter, meter_of, seed_grid
from bot.music.midi import read_midi
from bot.music.midi_out import midi_bytes, time_signatures

pytestmark = pytest.mark.timeout(60)


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
