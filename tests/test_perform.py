"""Tests for bot.music.perform: a fixed chorale played expressively (its velocities, voicing, tempo map and
pedal as the .mid holds them), `plain` as the piece always sounded, a seed's playing carried on, and seeds
whose velocities or pedal say nothing usable."""

from __future__ import annotations

import hashlib
import io

import mido
import numpy as np
import pytest
from test_compose import etude, one_error_line
from test_midi import ev, note, smf

from bot.bench.perform import chord_spread_ms
from bot.errors import BadOption
from bot.music.events import Event
from bot.music.midi import read_midi
from bot.music.midi_out import midi_bytes
from bot.music.perform import FERMATA, FINAL_TEMPO, PEDAL_PROGRAMS, perform, seed_style
from bot.options import Options

pytestmark = pytest.mark.timeout(300)

SOPRANO = [72, 74, 76, 77, 79, 77, 76, 74, 76, 77, 79, 81, 79, 77, 76, 72]
ALTO = [67, 67, 67, 69, 71, 69, 67, 67, 67, 69, 71, 72, 71, 69, 67, 67]
TENOR = [64, 65, 64, 65, 62, 65, 64, 62, 64, 65, 62, 65, 62, 65, 64, 64]
BASS = [48, 50, 52, 53, 55, 53, 52, 55, 48, 53, 55, 53, 55, 50, 55, 48]
# The sha-256 of this chorale's .mid as every piece was written before there was a performer.
PLAIN_SHA256 = "968eea927f101eac804fa718d2a7b511900db041f03a5beafe6ec8d2432e689b"


def chorale(repeat: int = 1) -> list[Event]:
    """Two four-bar phrases of four-voice chords, one a beat, each ending on a fermata; `repeat` times."""
    events = []
    for r in range(repeat):
        for beat, chord in enumerate(zip(SOPRANO, ALTO, TENOR, BASS)):
            last = r == repeat - 1 and beat == 15
            events.append(
                Event(16.0 * r + beat, 2.0 if last else 1.0, tuple(sorted(chord)), 80, beat in (7, 15))
            )
    return events


def tempo_map(midi: bytes) -> list[tuple[float, float]]:
    """(beat, bpm) of every tempo change in `midi`."""
    file = mido.MidiFile(file=io.BytesIO(midi))
    tick, out = 0, []
    for msg in file.tracks[0]:
        tick += msg.time
        if msg.type == "set_tempo":
            out.append((tick / file.ticks_per_beat, round(mido.tempo2bpm(msg.tempo), 1)))
    return out


def played(midi: bytes) -> list[tuple[float, int, int]]:
    """(beat, pitch, velocity) of every note in `midi`, and the CC64 values as (beat, -1, value)."""
    file = mido.MidiFile(file=io.BytesIO(midi))
    out = []
    for track in file.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                out.append((tick / file.ticks_per_beat, msg.note, msg.velocity))
            elif msg.type == "control_change" and msg.control == 64:
                out.append((tick / file.ticks_per_beat, -1, msg.value))
    return sorted(out)


# -- the performance of a fixed piece --------------------------------------------------------------------
def test_velocities_rise_and_fall_over_each_phrase_and_the_melody_leads() -> None:
    performance = perform(chorale(), 100.0, 0)
    notes = played(performance.midi())
    melody = [v for beat, p, v in notes if p >= 0 and p == max(q for b, q, _ in notes if b == beat)]
    for phrase in (melody[:8], melody[8:]):
        loudest = int(np.argmax(phrase))
        assert 0 < loudest < 7, phrase  # the swell peaks inside the phrase
        assert phrase[loudest] - phrase[0] >= 6 and phrase[loudest] - phrase[-1] >= 6, phrase
    by_beat: dict[float, list[tuple[int, int]]] = {}
    for beat, p, v in notes:
        if p >= 0:
            by_beat.setdefault(beat, []).append((p, v))
    inner = []
    for chord in by_beat.values():
        chord.sort()
        assert chord[-1][1] == max(v for _, v in chord)  # the top voice is the loudest of every chord
        inner += [v for _, v in chord[1:-1]]
    assert np.mean(melody) - np.mean(inner) >= 6
    assert chord_spread_ms(performance.midi()) == 0.0  # no chord is spread out in time


def test_the_mid_holds_the_final_ritardando_and_the_fermatas() -> None:
    tempos = tempo_map(perform(chorale(), 100.0, 0).midi())
    assert tempos[0] == (0.0, 100.0)
    fermata = dict(tempos)[7.0]
    assert fermata < 100 * FERMATA  # the first phrase's fermata held, in the final ritardando
    final = [bpm for beat, bpm in tempos if beat >= 8]
    assert final == sorted(final, reverse=True) and final[-1] == round(100 * FINAL_TEMPO, 1)
    assert len(final) >= 8  # a gradual ritardando, not a step
    longer = tempo_map(perform(chorale(2), 100.0, 0).midi())
    assert dict(longer)[7.0] == round(100 * FERMATA, 1) and dict(longer)[8.0] == 100.0


def test_plain_is_the_piece_as_it_was_always_written() -> None:
    events = chorale()
    performance = perform(events, 100.0, 0, "plain")
    midi = performance.midi()
    assert hashlib.sha256(midi).hexdigest() == PLAIN_SHA256
    assert midi == midi_bytes(events, 100.0, 0)
    assert tempo_map(midi) == [(0.0, 100.0)]
    assert {v for _, p, v in played(midi)} == {80} and not performance.pedal


def test_the_pedal_only_for_piano_like_programs() -> None:
    pedalled = {p for p in range(128) if any(n[1] == -1 for n in played(perform(chorale(), 100.0, p).midi()))}
    assert pedalled == PEDAL_PROGRAMS == {0, 1, 2, 3, 4, 5, 8, 11, 14}


def test_the_pedal_changes_with_the_harmony() -> None:
    notes = played(perform(chorale(), 100.0, 0).midi())
    pedal = [(beat, value) for beat, p, value in notes if p == -1]
    lifts = [beat for beat, value in pedal if value == 0]
    downs = [beat for beat, value in pedal if value == 127]
    # Every chord here is a new harmony: lifted as it is struck, down again an eighth of a beat later.
    assert lifts[:-1] == [float(b) for b in range(1, 16)]
    assert downs == [b + 0.125 for b in range(16)]
    assert lifts[-1] > 17  # the last chord rings on after its release


# -- seeds --------------------------------------------------------------------------------------------------
def soft_seed() -> bytes:
    return smf([b"".join(note(60 + i % 8, 96, velocity=36 + 8 * (i % 2)) for i in range(16))])


def test_a_seeds_level_carries_into_the_continuation_and_the_seed_sounds_as_played() -> None:
    seed = read_midi(soft_seed())
    style = seed_style(seed)
    assert style.level == 40 and style.spread == 8
    continuation = [Event(e.onset + 16, e.duration, e.pitches, 80, e.fermata) for e in chorale()]
    alone = np.median([n.velocity for n in perform(continuation, 100.0, 0).notes])
    after = perform(seed.events + continuation, 100.0, 0, seed_events=len(seed.events), seed=style)
    assert [n.velocity for n in after.notes[:16]] == [36, 44] * 8  # the seed as it was played
    carried = np.median([n.velocity for n in after.notes[16:]])
    assert abs(carried - 40) <= 8 and alone - carried >= 20
    spread = np.percentile([n.velocity for n in after.notes[16:]], [10, 90])
    full = np.percentile([n.velocity for n in perform(continuation, 100.0, 0).notes], [10, 90])
    assert np.ptp(spread) < np.ptp(full)  # a seed played evenly is continued more evenly
    assert after.note == ""


def test_the_composer_continues_a_seed_at_its_level() -> None:
    from bot.model.composer import Composer

    composer = Composer()
    seed = composer.seed(soft_seed(), "soft")
    piece = composer.compose_one(Options(length=24, rng_seed=3, include_seed=True), seed)
    notes = [n for n in played(piece.midi()) if n[1] >= 0]
    assert [v for _, _, v in notes[:16]] == [36, 44] * 8
    # The phrases' arches lift a continuation a little above the seed's level (40), far below the level
    # the same notes are played at with no seed heard.
    carried = np.median([v for _, _, v in notes[16:]])
    alone = np.median([n.velocity for n in perform(piece.events[piece.seed_events :], piece.tempo, 0).notes])
    assert abs(carried - 40) <= 12 and alone - carried >= 20
    plain = composer.compose_one(Options(length=24, rng_seed=3, include_seed=True, performance="plain"), seed)
    assert plain.midi() == midi_bytes(plain.events, plain.tempo, 0, plain.name)


def test_a_seed_at_full_velocity_is_played_at_a_sensible_level() -> None:
    seed = read_midi(smf([b"".join(note(60 + i % 8, 96, velocity=127) for i in range(16))]))
    style = seed_style(seed)
    assert style.level is None and "full velocity" in style.velocities_fixed
    continuation = [Event(e.onset + 16, e.duration, e.pitches, 80, e.fermata) for e in chorale()]
    heard = perform(seed.events + continuation, 100.0, 0, seed_events=16, seed=style)
    assert max(n.velocity for n in heard.notes) < 127 and "full velocity" in heard.note
    unheard = perform(continuation, 100.0, 0, seed=style)
    assert unheard.note == "" and 60 <= np.median([n.velocity for n in unheard.notes]) <= 85


def test_a_seed_struck_at_velocity_zero_is_played_not_refused() -> None:
    mute = b"".join(ev(0, 0x90, 60 + i, 0) + ev(96, 0x80, 60 + i, 0) for i in range(8))
    seed = read_midi(smf([mute]))
    assert len(seed.events) == 8 and {e.velocity for e in seed.events} == {80}
    assert seed.meta["velocities_zero"] == 8
    style = seed_style(seed)
    assert style.level is None and "velocity 0" in style.velocities_fixed
    heard = perform(seed.events + chorale(), 100.0, 0, seed_events=8, seed=style)
    assert "velocity 0" in heard.note and min(n.velocity for n in heard.notes[:8]) >= 40


def _pedalled(events: bytes, pedal: list[tuple[int, int]]) -> bytes:
    """A track of `events` (96 ticks a beat) with CC64 at the given (tick, value) in a track beside it."""
    body, now = b"", 0
    for tick, value in pedal:
        body += ev(tick - now, 0xB0, 64, value)
        now = tick
    return smf([events, body])


def test_a_seeds_own_pedal_is_kept_and_a_stuck_one_is_not() -> None:
    melody = b"".join(note(60 + i % 8, 96) for i in range(16))
    kept = read_midi(_pedalled(melody, [(0, 127), (380, 0), (384, 100), (764, 0), (768, 127), (1530, 0)]))
    assert kept.pedal == ((0.0, 127), (3.9583, 0), (4.0, 127), (7.9583, 0), (8.0, 127), (15.9375, 0))
    style = seed_style(kept)
    assert style.pedal == kept.pedal and style.pedal_fixed == ""
    heard = perform(kept.events + chorale(), 100.0, 0, seed_events=16, seed=style)
    assert heard.pedal[:6] == list(kept.pedal) and heard.note == ""

    stuck = read_midi(_pedalled(melody, [(0, 127), (1536, 0)]))
    style = seed_style(stuck)
    assert style.pedal == () and "pedal down throughout" in style.pedal_fixed
    heard = perform(stuck.events + chorale(), 100.0, 0, seed_events=16, seed=style)
    assert "pedal" in heard.note and len([b for b, v in heard.pedal if v == 0 and b < 16]) >= 8
    organ = perform(stuck.events + chorale(), 100.0, 19, seed_events=16, seed=style)
    assert organ.pedal == [] and organ.note == ""  # no pedal at all, so nothing changed for the user


# -- the option ---------------------------------------------------------------------------------------------
def test_a_bad_performance_is_one_line() -> None:
    with pytest.raises(BadOption, match="performance must be one of: expressive, plain"):
        Options(performance="loud").check()
    line = one_error_line(etude("compose", "--performance", "loud", "--out", "/tmp", timeout=60))
    assert line == "error: argument --performance: unknown performance 'loud': use expressive or plain"
    line = one_error_line(etude("harmonize", "--melody", "m.mid", "--performance", "", timeout=60))
    assert "unknown performance ''" in line
