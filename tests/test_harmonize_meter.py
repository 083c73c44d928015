"""A melody's meter reaches the harmonizer: the network hears where each chord falls in the melody's bar
(a pickup included), the .mid keeps the melody's time signature, and an assumed meter is said."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest

import bot.model.harmonize as H
from bot.model.harmonize import harmonize
from bot.model.steps import NumpySteps
from bot.music.events import GRID, Event
from bot.music.melody import moved_text, read_melody
from bot.music.meter import Meter, meter_ids
from bot.options import Options

pytestmark = pytest.mark.timeout(300)

# A waltz tune in C major: a one-beat pickup, then a half note and a quarter in every 3/4 bar.
WALTZ = [
    (0.0, 1.0, 67),
    (1.0, 2.0, 72),
    (3.0, 1.0, 76),
    (4.0, 2.0, 74),
    (6.0, 1.0, 71),
    (7.0, 2.0, 72),
    (9.0, 1.0, 69),
    (10.0, 2.0, 67),
    (12.0, 1.0, 71),
    (13.0, 3.0, 72),
]
TPB = 480


def midi_file(
    notes: list[tuple[float, float, int]], signatures: list[tuple[float, int, int]], offset: float = 0.0
) -> bytes:
    """`notes` (onset, duration, pitch; moved `offset` quarters later) as a type-0 file built message by
    message, with the time signatures (quarter, numerator, denominator) given, or none."""
    events = [
        (round(t * TPB), 0, mido.MetaMessage("time_signature", numerator=n, denominator=d))
        for t, n, d in signatures
    ]
    for on, du, p in notes:
        events.append((round((on + offset) * TPB), 2, mido.Message("note_on", note=p, velocity=80)))
        events.append((round((on + offset + du) * TPB), 1, mido.Message("note_off", note=p, velocity=0)))
    track, now = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120), time=0)]), 0
    for tick, _, msg in sorted(events, key=lambda e: e[:2]):
        track.append(msg.copy(time=tick - now))
        now = tick
    buf = io.BytesIO()
    mido.MidiFile(type=0, ticks_per_beat=TPB, tracks=[track]).save(file=buf)
    return buf.getvalue()


@pytest.fixture
def heard(monkeypatch):
    """Every NumpySteps the harmonizer builds, with the tokens it was fed and the bar position (steps
    from the downbeat) each row had reached once it read them."""
    made: list[NumpySteps] = []

    class Listening(NumpySteps):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.fed: list[tuple[np.ndarray, np.ndarray]] = []
            made.append(self)

        def feed(self, tokens, rows):
            out = super().feed(tokens, rows)
            self.fed.append((np.array(tokens), self.bar_pos.copy()))
            return out

    monkeypatch.setattr(H, "NumpySteps", Listening)
    return made


def chord_positions(steps: NumpySteps, vocab) -> list[int]:
    """The bar position the network heard at each chord: every frame of a melody note holds four attacks
    (three sampled, the melody's given), all at the note's onset."""
    low, high = vocab.pitch_id(vocab.pitch_low), vocab.pitch_id(vocab.pitch_high)
    attacks = [pos for tokens, pos in steps.fed if low <= tokens[0] <= high]
    assert len(attacks) % 4 == 0
    frames = [np.stack(attacks[i : i + 4]) for i in range(0, len(attacks), 4)]
    assert all((f == f[0, 0]).all() for f in frames)  # one time for the whole chord, in every particle
    return [int(f[0, 0]) for f in frames]


def signatures_of(data: bytes) -> list[tuple[int, int, int]]:
    out, now = [], 0
    for msg in mido.MidiFile(file=io.BytesIO(data)).merged_track:
        now += msg.time
        if msg.type == "time_signature":
            out.append((now, msg.numerator, msg.denominator))
    return out


@pytest.mark.parametrize(
    "signatures,offset,start,written",
    [
        # The pickup written as a short first bar, as notation programs write it: the melody starts on it.
        ([(0.0, 1, 4), (1.0, 3, 4)], 0.0, 0.0, [(0, 1, 4), (TPB, 3, 4)]),
        # A 3/4 file whose tune enters on the last beat of its second bar: the silent first bar is dropped,
        # and the melody starts where its bar does, two beats of rest before the pickup.
        ([(0.0, 3, 4)], 5.0, 2.0, [(0, 3, 4)]),
    ],
)
def test_a_three_four_melody_with_a_pickup_is_heard_and_written_in_three_four(
    composer, heard, signatures, offset, start, written
):
    melody = read_melody(midi_file(WALTZ, signatures, offset), "waltz")
    tune = [(on + start, du, p) for on, du, p in WALTZ]
    assert [(n.onset, n.duration, n.pitches[0]) for n in melody.notes] == tune
    downbeat = (start + 1.0) % 3  # the pickup is one beat long
    assert (melody.meter.name, melody.meter.downbeat, melody.meter.source) == ("3/4", downbeat, "file")

    piece = harmonize(composer, Options(rng_seed=3), melody)
    assert len(heard) == 1
    steps = heard[0]
    assert steps.meter.bar_steps == 3 * GRID
    # Each chord is heard where its note falls in the 3/4 bar: the pickup on the third beat, then beats 1, 3.
    positions = chord_positions(steps, composer.vocab)
    assert positions == [round(((on - 1.0) % 3) * GRID) for on, _, _ in WALTZ]
    assert positions[:3] == [2 * GRID, 0, 2 * GRID]
    ids = meter_ids(np.array(positions), steps.meter.bar_steps)
    assert (ids == meter_ids(np.array(positions), 3 * GRID)).all()
    assert not (ids == meter_ids(np.array(positions), 4 * GRID)).any()  # not the ids of a 4/4 bar

    # The .mid carries the melody's time signature, its bars where the melody has them, and the melody on
    # top with its own onsets.
    data = piece.midi()
    assert signatures_of(data) == written
    again = read_melody(data, "again")
    assert [(n.onset, n.duration, n.pitches[0]) for n in again.notes] == tune
    assert (again.meter.name, again.meter.downbeat) == ("3/4", downbeat)
    assert piece.said == []  # nothing was assumed


def test_a_melody_without_a_time_signature_says_the_meter_it_was_given(composer, heard):
    melody = read_melody(midi_file(WALTZ, []), "waltz")
    # The onsets suggest 3/4 with the downbeat after the pickup: the same rule a seed is read with.
    assert (melody.meter.name, melody.meter.downbeat, melody.meter.source) == ("3/4", 1.0, "onsets")
    piece = harmonize(composer, Options(rng_seed=1), melody)
    assert piece.said == [
        "the melody has no time signature: harmonized in 3/4 with bars where its notes suggest"
    ]
    assert chord_positions(heard[0], composer.vocab)[:3] == [2 * GRID, 0, 2 * GRID]
    assert signatures_of(piece.midi()) == [(0, 1, 4), (TPB, 3, 4)]


def test_a_melody_with_no_steady_beat_is_harmonized_in_four_four_from_its_first_note(composer, heard):
    # Onsets every five twelfths of a quarter: off the sixteenth and triplet grids, as a free performance.
    free = [(i * 5 / GRID, 5 / GRID, (64, 65, 67, 69, 67)[i % 5]) for i in range(10)]
    melody = read_melody(midi_file(free, []), "free")
    assert (melody.meter.name, melody.meter.source) == ("4/4", "unsteady")
    piece = harmonize(composer, Options(rng_seed=1), melody)
    assert piece.said == ["the melody has no steady beat: harmonized in 4/4 with bars from its first note"]
    assert heard[0].meter.bar_steps == 4 * GRID and chord_positions(heard[0], composer.vocab)[0] == 0


def test_folded_notes_are_named_by_the_bars_of_the_melodys_meter():
    notes = [Event(float(i), 1.0, (60,)) for i in range(8)]
    # 3/4 with a one-beat pickup: the pickup is bar 1, beats 1-3 bar 2, beats 4-6 bar 3, beat 7 bar 4.
    assert moved_text(notes, {0: 1, 3: 1, 7: 1}, Meter(3, 4, 1.0)).endswith("bars 1-2, 4")
    assert moved_text(notes, {0: 1, 3: 1, 7: 1}).endswith("bars 1-2")  # 4/4 from the first note


def test_the_harmony_prior_reads_the_melodys_bars(composer, monkeypatch):
    from bot.model.harmony_prior import HarmonyPrior, shipped

    melody = read_melody(midi_file(WALTZ, [(0.0, 1, 4), (1.0, 3, 4)]), "waltz")
    read = []
    tables = HarmonyPrior.tables

    def reading(self, notes, minor, meter):
        read.append(meter)
        return tables(self, notes, minor, meter)

    monkeypatch.setattr(HarmonyPrior, "tables", reading)
    harmonize(composer, Options(rng_seed=3), melody)
    assert read == [Meter(3, 4, 1.0, "file")]
    # And the shipped prior hears the difference: its bass under the tune is not the one of 4/4 bars.
    prior = shipped()
    assert prior is not None
    assert not np.allclose(prior.bass(melody.notes, False, read[0]), prior.bass(melody.notes, False, Meter()))
