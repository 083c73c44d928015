"""Reading untrusted MIDI seeds and writing MIDI: every hostile file is built here, byte by byte."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import mido
import pytest

from bot.errors import BadSeed, EtudeError
from bot.music.events import GRID, Event, Piece
from bot.music.midi import DEFAULT_LIMITS, SeedLimits, read_midi, read_midi_file
from bot.music.midi_out import midi_bytes, write_midi

pytestmark = pytest.mark.timeout(30)


# -- building files by hand ------------------------------------------------------------------------
def vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def ev(delta: int, *data: int) -> bytes:
    return vlq(delta) + bytes(data)


def meta(kind: int, payload: bytes, delta: int = 0) -> bytes:
    return vlq(delta) + bytes([0xFF, kind]) + vlq(len(payload)) + payload


def tempo(us_per_beat: int, delta: int = 0) -> bytes:
    return meta(0x51, us_per_beat.to_bytes(3, "big"), delta)


def note(pitch: int, length: int, rest: int = 0, velocity: int = 80, channel: int = 0) -> bytes:
    """A note-on after `rest` ticks, released `length` ticks later by a note-on with velocity 0."""
    return ev(rest, 0x90 | channel, pitch, velocity) + ev(length, 0x90 | channel, pitch, 0)


EOT = meta(0x2F, b"")


def chunk(cid: bytes, body: bytes, length: int | None = None) -> bytes:
    return cid + struct.pack(">I", len(body) if length is None else length) + body


def smf(tracks: list[bytes], fmt: int = 1, division: int = 96, ntrks: int | None = None) -> bytes:
    """A Standard MIDI File whose tracks are the given bodies (end-of-track added where missing)."""
    head = chunk(b"MThd", struct.pack(">HHH", fmt, len(tracks) if ntrks is None else ntrks, division))
    return head + b"".join(chunk(b"MTrk", t if t.endswith(EOT) else t + EOT) for t in tracks)


def melody(n: int, step: int = 96, first: int = 48) -> bytes:
    """`n` quarter notes (at 96 ticks per beat) climbing through two octaves."""
    return b"".join(note(first + i % 24, step) for i in range(n))


def pitch_count(piece: Piece) -> int:
    return sum(len(e.pitches) for e in piece.events)


def expect_piece(data: bytes, limits: SeedLimits = DEFAULT_LIMITS) -> Piece:
    piece = read_midi(data, "test", limits)
    assert isinstance(piece, Piece) and len(piece.events) >= 1
    assert all(0 <= p <= 127 for e in piece.events for p in e.pitches)
    assert all(1 <= e.velocity <= 127 and e.duration > 0 and e.onset >= 0 for e in piece.events)
    assert 20 <= piece.tempo <= 400
    return piece


def expect_bad(data: bytes, match: str, limits: SeedLimits = DEFAULT_LIMITS) -> BadSeed:
    with pytest.raises(BadSeed, match=match) as info:
        read_midi(data, "test", limits)
    message = str(info.value)
    assert "\n" not in message and len(message) < 120
    return info.value


# -- hostile files ---------------------------------------------------------------------------------
def test_empty_file() -> None:
    expect_bad(b"", "empty")


def test_random_bytes() -> None:
    expect_bad(random.Random(1).randbytes(10_000), "not a MIDI file")


def test_wav_renamed_mid() -> None:
    samples = struct.pack("<1000h", *([0, 1000, 0, -1000] * 250))
    fmt = struct.pack("<HHIIHH", 1, 1, 44100, 88200, 2, 16)  # PCM, mono, 44.1 kHz, 16 bit
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(samples))
    wav = b"RIFF" + struct.pack("<I", len(body) + len(samples)) + body + samples
    expect_bad(wav, "not a MIDI file")


def test_header_without_tracks() -> None:
    expect_bad(smf([], ntrks=0), "no tracks")
    expect_bad(smf([], ntrks=3), "no tracks")  # the header promises tracks that are not there


def test_file_cut_in_half() -> None:
    whole = smf([melody(100)])
    piece = expect_piece(whole[: len(whole) // 2])  # the notes before the cut are kept
    assert 10 < pitch_count(piece) < 100
    assert piece.meta["damage"]
    expect_bad(whole[:10], "damaged")  # cut inside the header


def test_chunk_length_too_long() -> None:
    first, second = melody(10), melody(10, first=80)
    data = smf([first, second])
    # The first track claims far more bytes than the file has: both tracks are still found.
    lying = data.replace(struct.pack(">I", len(first + EOT)), struct.pack(">I", 0xFFFFFFFF), 1)
    piece = expect_piece(lying)
    assert pitch_count(piece) == 20
    # The only track claims a million bytes: its notes are kept.
    expect_piece(smf([], ntrks=1) + chunk(b"MTrk", first + EOT, length=1_000_000))


def test_chunk_length_too_short() -> None:
    first, second = melody(10), melody(10, first=80)
    data = smf([first, second])
    lying = data.replace(struct.pack(">I", len(first + EOT)), struct.pack(">I", len(first) // 2), 1)
    piece = expect_piece(lying)
    pitches = {p for e in piece.events for p in e.pitches}
    assert any(p < 80 for p in pitches)  # the first half of the first track
    assert any(p >= 80 for p in pitches)  # and the second track, found after the lie
    assert piece.meta["damage"]


def test_time_division_zero() -> None:
    expect_bad(smf([melody(4)], division=0), "time division")


def test_smpte_time_division() -> None:
    # 25 frames per second, 40 ticks per frame: 1000 ticks per second, whatever the tempo says.
    division = (256 - 25) << 8 | 40
    piece = expect_piece(smf([tempo(250_000) + note(60, 1000) + note(62, 500, rest=1000)], division=division))
    assert piece.tempo == 240
    # The second note starts 2 s in: 8 quarter notes at 240 bpm; the first lasts 1 s: 4 quarters.
    assert [(e.onset, e.duration, e.pitches) for e in piece.events] == [(0, 4, (60,)), (8, 2, (62,))]


def test_no_notes() -> None:
    track = meta(0x03, b"Empty") + tempo(500_000) + ev(0, 0xC0, 5) + ev(10, 0xB0, 7, 100)
    expect_bad(smf([track]), "no notes")


def test_drums_only() -> None:
    expect_bad(smf([b"".join(note(36 + i % 10, 48, channel=9) for i in range(50))]), "drums")


def test_pitches_0_and_127() -> None:
    piece = expect_piece(smf([note(0, 96) + note(127, 96)]))
    assert [e.pitches for e in piece.events] == [(0,), (127,)]


def test_notes_never_released() -> None:
    track = ev(0, 0x90, 60, 80) + ev(96, 0x90, 64, 80) + meta(0x01, b"the end", delta=192)
    piece = expect_piece(smf([track]))
    # Both notes end where the track ends, three quarter notes in.
    assert [(e.onset, e.duration, e.pitches) for e in piece.events] == [(0, 3, (60,)), (1, 2, (64,))]
    assert piece.meta["notes_never_released"] == 2
    # A track that ends an hour later cuts the note to max_note_seconds (30 s at 120 bpm = 60 quarters).
    piece = expect_piece(smf([ev(0, 0x90, 60, 80) + meta(0x01, b"x", delta=96 * 2 * 3600)]))
    assert piece.events[0].duration == 60


@pytest.mark.parametrize(("us_per_beat", "bpm"), [(1, 400), (0, 400), (0xFFFFFF, 20), (60_000_000 // 97, 97)])
def test_absurd_tempo(us_per_beat: int, bpm: float) -> None:
    piece = expect_piece(smf([tempo(us_per_beat) + melody(8)]))
    assert round(piece.tempo) == bpm
    assert piece.meta["file_tempo_us_per_beat"] == us_per_beat
    # The conversion uses the clamped tempo too, so quarter notes stay quarter notes.
    assert [e.onset for e in piece.events] == list(range(8))


def test_note_hours_long() -> None:
    hours = 96 * 2 * 3600 * 5  # five hours at 120 bpm
    piece = expect_piece(smf([ev(0, 0x90, 60, 80) + ev(hours, 0x80, 60, 0) + note(62, 96)]))
    assert piece.events[0].duration == 60  # cut to 30 s
    assert piece.meta["notes_cut_long"] == 1
    # The note after it starts five hours in, past max_seconds: dropped.
    assert piece.meta["notes_dropped_late"] == 1 and len(piece.events) == 1


def test_hundreds_of_tracks() -> None:
    tracks = [note(30 + i % 90, 96, rest=96 * i) for i in range(300)]
    piece = expect_piece(smf(tracks))
    assert pitch_count(piece) == 300 and piece.meta["tracks"] == 300
    expect_bad(smf([note(60, 96)] * 600), "more than 512 tracks")


@pytest.mark.timeout(60)
def test_tens_of_thousands_of_notes() -> None:
    # 30,000 notes a twelfth of a beat long at 240 bpm: about ten minutes, inside max_seconds.
    notes = b"".join(note(20 + i % 100, 8) for i in range(30_000))
    piece = expect_piece(smf([tempo(250_000) + notes]))
    assert pitch_count(piece) == DEFAULT_LIMITS.max_notes
    assert piece.meta["notes_read"] == 30_000
    assert piece.meta["notes_dropped_over_limit"] == 30_000 - DEFAULT_LIMITS.max_notes
    # The last notes are the ones kept, in their order, moved to the front by whole bars.
    kept = [e.pitches[0] for e in piece.events]
    assert kept == [20 + i % 100 for i in range(30_000 - DEFAULT_LIMITS.max_notes, 30_000)]
    assert piece.events[0].onset < 4


def test_too_many_messages() -> None:
    expect_bad(smf([melody(200)]), "more than 100 MIDI messages", SeedLimits(max_messages=100))


def test_format_2_tracks_play_one_after_another() -> None:
    piece = expect_piece(smf([tempo(500_000) + melody(4), tempo(1_000_000) + melody(4, first=80)], fmt=2))
    onsets = {e.pitches[0]: e.onset for e in piece.events}
    # The second pattern starts after the first (4 quarters); each keeps its own beats, and the piece
    # goes on at the tempo where it ends, the second pattern's 60 bpm.
    assert [onsets[p] for p in (80, 81, 82, 83)] == [4, 5, 6, 7]
    assert piece.tempo == 60


def test_sysex_lyrics_and_odd_bytes_in_names() -> None:
    track = (
        meta(0x03, b"\xff\xfe\x80 bad \xc3(")  # not UTF-8
        + meta(0x01, "ünïcödé ✓".encode())
        + ev(0, 0xF0, 5, 0x7E, 0x7F, 0x09, 0x01, 0xF7)  # GM on
        + ev(0, 0xF7, 2, 0x01, 0x02)  # a sysex continuation packet
        + meta(0x05, b"la\x00la\xff")  # lyrics
        + meta(0x7F, b"\x00\x00\x41" + bytes(range(256)))  # sequencer specific
        + meta(0x21, b"\x00")  # MIDI port
        + melody(4)
    )
    piece = expect_piece(smf([track]))
    assert pitch_count(piece) == 4
    assert all(isinstance(n, str) for n in piece.meta["track_names"])


def test_30_mb_file_is_refused_without_parsing(tmp_path: Path, monkeypatch) -> None:
    expect_bad(b"MThd" + bytes(30 * 1024 * 1024), "larger than 2 MiB")
    path = tmp_path / "huge.mid"
    with path.open("wb") as f:
        f.truncate(30 * 1024 * 1024)  # sparse: the size is what the reader must refuse, before reading

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_reading)
    with pytest.raises(BadSeed, match="larger than 2 MiB"):
        read_midi_file(path)


def test_missing_file_is_a_bad_seed(tmp_path: Path) -> None:
    with pytest.raises(BadSeed, match="cannot be read"):
        read_midi_file(tmp_path / "nope.mid")


def test_deadline() -> None:
    expect_bad(smf([melody(2000)]), "too long", SeedLimits(parse_seconds=0.0))


def test_overlapping_same_pitch_closes_the_earlier() -> None:
    track = ev(0, 0x90, 60, 80) + ev(96, 0x90, 60, 90) + ev(96, 0x80, 60, 0) + ev(96, 0x80, 60, 0)
    piece = expect_piece(smf([track]))
    assert [(e.onset, e.duration, e.velocity) for e in piece.events] == [(0, 1, 80), (1, 1, 90)]


def test_running_status_and_zero_length_notes() -> None:
    # One status byte, then pairs of data bytes; the last note is released at the tick it starts.
    track = ev(0, 0x91, 60, 80) + ev(96, 60, 0) + ev(0, 64, 80) + ev(0, 64, 0)
    piece = expect_piece(smf([track]))
    assert [(e.onset, e.duration, e.pitches) for e in piece.events] == [(0, 1, (60,)), (1, 1 / GRID, (64,))]


def test_tempo_map_is_applied() -> None:
    # 120 bpm for two beats, then 60 bpm: a quarter note stays a quarter note, and the seed ends at 60.
    track = tempo(500_000) + note(60, 96) + note(62, 96) + tempo(1_000_000) + note(64, 96) + note(65, 96)
    piece = expect_piece(smf([track]))
    assert piece.tempo == 60
    assert piece.meta["file_tempo_us_per_beat"] == 500_000
    assert [(e.onset, e.duration) for e in piece.events] == [(0, 1), (1, 1), (2, 1), (3, 1)]


def test_many_tempo_changes_keep_every_onset_on_the_grid() -> None:
    # An accelerando written as a tempo change every beat (odd tempi, some mid-note), with eighths,
    # triplets and sixteenths, on a conductor track apart from the notes as format 1 files have it.
    tpb = 480
    conductor = tempo(652_174)  # 92 bpm
    bpms = [92, 97, 103, 111, 118, 126, 133, 140, 147, 151, 158, 163]
    for bpm in bpms[1:]:
        conductor += tempo(round(60e6 / bpm), delta=tpb)
    steps = [240, 240, 160, 160, 160, 120, 120, 120, 120, 480, 240, 160, 160, 160, 720, 240, 480, 960]
    notes = b"".join(note(60 + i % 12, step) for i, step in enumerate(steps))
    piece = expect_piece(smf([conductor, notes], division=tpb))
    expected = [sum(steps[:i]) / tpb for i in range(len(steps))]
    onsets = [e.onset for e in piece.events]
    assert onsets == pytest.approx(expected, abs=1e-9)
    assert all(abs(x * GRID - round(x * GRID)) < 1e-9 for x in onsets)
    assert [e.duration for e in piece.events] == pytest.approx([s / tpb for s in steps], abs=1e-9)
    # The last note starts at beat 8.5: the continuation is played at the tempo set at beat 8; the
    # changes after the last note (beats 9-11) play no note and do not count.
    assert piece.tempo == pytest.approx(60e6 / round(60e6 / bpms[8]))
    assert piece.meta["tempo_changes"] == len(bpms)


def test_a_seed_that_slows_into_its_end_is_continued_at_its_pace() -> None:
    # 12 beats at 100 bpm, then a ritardando to 60 over the last 4 (a tempo a beat, as this project's own
    # performed files write it): the continuation goes on at 100, not at the ritardando's 60.
    tpb = 480
    bpms = [100] * 12 + [90, 80, 70, 60]
    conductor = tempo(round(60e6 / bpms[0])) + b"".join(
        tempo(round(60e6 / bpm), delta=tpb) for bpm in bpms[1:]
    )
    notes = b"".join(note(60 + i % 7, tpb // 2) for i in range(2 * len(bpms)))
    piece = expect_piece(smf([conductor, notes], division=tpb))
    assert piece.tempo == pytest.approx(100, abs=0.01)
    # A slower tempo taken for good (the last 8 beats at 60) is where the seed has got to: it goes on.
    conductor = tempo(round(60e6 / 100)) + tempo(round(60e6 / 60), delta=8 * tpb)
    piece = expect_piece(smf([conductor, notes], division=tpb))
    assert piece.tempo == pytest.approx(60, abs=0.01)


def test_tempo_changes_measured_in_real_time_for_the_limits() -> None:
    # Ten quarters at 120 bpm (5 s), then 20 bpm: a note held 10 quarters after the change lasts 30 s,
    # past max_note_seconds (20 s here), and is cut at 20 s: 20 s at 20 bpm is 6.67 quarters.
    track = tempo(500_000) + melody(10) + tempo(3_000_000) + note(60, 960)
    piece = expect_piece(smf([track]), SeedLimits(max_note_seconds=20))
    assert piece.events[-1].onset == 10
    assert piece.events[-1].duration == pytest.approx(round(20 / 3 * GRID) / GRID)
    assert piece.meta["notes_cut_long"] == 1
    # A note that starts later than max_seconds in real time is dropped: 12 quarters at 20 bpm = 36 s.
    late = tempo(500_000) + melody(10) + tempo(3_000_000) + note(60, 96, rest=96 * 12)
    piece = expect_piece(smf([late]), SeedLimits(max_seconds=30))
    assert piece.meta["notes_dropped_late"] == 1 and piece.events[-1].onset == 9


def test_smpte_follows_the_tempo_map() -> None:
    # 1000 ticks per second; 120 bpm for the first second (2 beats), then 60 bpm.
    division = (256 - 25) << 8 | 40
    track = tempo(500_000) + note(60, 1000) + tempo(1_000_000) + note(62, 1000) + note(64, 1000)
    piece = expect_piece(smf([track], division=division))
    assert [(e.onset, e.duration) for e in piece.events] == [(0, 2), (2, 1), (3, 1)]
    assert piece.tempo == 60


@pytest.mark.timeout(60)
def test_mutated_files_never_crash() -> None:
    base = smf([tempo(400_000) + meta(0x03, b"Lead") + melody(40), melody(40, first=70)])
    rng = random.Random(7)
    outcomes = set()
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.6:
                data[i] = rng.randrange(256)
            elif choice < 0.8:
                del data[i : i + rng.randint(1, 20)]
            else:
                data[i:i] = rng.randbytes(rng.randint(1, 20))
        try:
            piece = read_midi(bytes(data))
            assert piece.events
            outcomes.add("piece")
        except BadSeed as err:
            assert isinstance(err, EtudeError) and "\n" not in str(err)
            outcomes.add("bad")
    assert outcomes == {"piece", "bad"}


# -- writing ---------------------------------------------------------------------------------------
EVENTS = [
    Event(0, 1, (60, 64, 67), 90),
    Event(1, 0.5, (62,), 70),
    Event(1.5, 0.25, (64,), 71),
    Event(1.75, 1 / 3, (65,), 72),
    Event(2, 1, (72, 76), 100),
    Event(2, 2, (48,), 60),
    Event(3, 1, (72,), 110),
    Event(7.5, 0.5, (21, 108), 1),
]


def test_round_trip() -> None:
    piece = read_midi(midi_bytes(EVENTS, tempo=93))
    assert piece.tempo == pytest.approx(93, abs=0.01)
    assert [(e.onset, e.duration, e.pitches) for e in piece.events] == [
        (e.onset, pytest.approx(e.duration, abs=0.5 / GRID), e.pitches) for e in EVENTS
    ]
    assert [e.velocity for e in piece.events] == [e.velocity for e in EVENTS]


def test_midi_bytes_is_deterministic(tmp_path: Path) -> None:
    data = midi_bytes(EVENTS, tempo=120, program=40, name="Ünïcode ✓")
    assert data == midi_bytes(list(EVENTS), tempo=120, program=40, name="Ünïcode ✓")
    write_midi(EVENTS, tmp_path / "out.mid", tempo=120, program=40, name="Ünïcode ✓")
    assert (tmp_path / "out.mid").read_bytes() == data
    midi = mido.MidiFile(file=io.BytesIO(data))
    assert midi.type == 1 and midi.ticks_per_beat == 480 and len(midi.tracks) == 2
    types = [m.type for m in midi.tracks[0]]
    assert {"set_tempo", "time_signature", "track_name"} <= set(types)
    assert [m.program for m in midi.tracks[1] if m.type == "program_change"] == [40]


def test_written_notes_never_stick() -> None:
    # The same pitch starts again before it ends: the first must be released before the second starts.
    events = [
        Event(0, 4, (60,), 80),
        Event(1, 1, (60,), 90),
        Event(1, 3, (60,), 70),
        Event(2, 0, (200,), 500),
    ]
    midi = mido.MidiFile(file=io.BytesIO(midi_bytes(events)))
    sounding: dict[int, int] = {}
    for msg in midi.tracks[1]:
        if msg.type == "note_on" and msg.velocity:
            assert sounding.get(msg.note, 0) == 0, "a note started while the same pitch was still sounding"
            sounding[msg.note] = 1
            assert 1 <= msg.velocity <= 127
        elif msg.type in ("note_on", "note_off"):
            sounding[msg.note] = 0
    assert not any(sounding.values())


@pytest.mark.timeout(60)
def test_music21_corpus_piece(tmp_path: Path) -> None:
    music21 = pytest.importorskip("music21")
    score = music21.corpus.parse("bach/bwv66.6")
    expected = sum(len(n.pitches) for n in score.stripTies().flatten().notes)
    path = Path(score.write("midi", fp=tmp_path / "bwv66.mid"))
    piece = read_midi_file(path)
    assert piece.name == "bwv66"
    assert piece.meta["notes_read"] == expected
    # Voices in unison merge into one pitch of a chord, so a few fewer pitches than notes.
    assert 0.9 * expected <= pitch_count(piece) <= expected
    assert 20 <= piece.tempo <= 400


@pytest.mark.timeout(300)
def test_a_seed_with_tempo_changes_continues_at_its_last_tempo(composer) -> None:
    from bot.options import Options

    tpb = 480
    conductor = (
        tempo(500_000) + tempo(600_000, delta=4 * tpb) + tempo(452_830, delta=4 * tpb)
    )  # 120, 100, 132.5
    steps = [240 if i % 3 else 160 for i in range(36)]
    notes = b"".join(note(60 + (i * 5) % 12, step) for i, step in enumerate(steps))
    seed = composer.seed(smf([conductor, notes], division=tpb), "tempo-changes")
    # Every onset where the file puts it in beats, across both changes.
    assert [e.onset for e in seed.events] == pytest.approx([sum(steps[:i]) / tpb for i in range(36)])
    piece = composer.compose_one(Options(length=60, rng_seed=3, include_seed=True), seed)
    assert piece.tempo == pytest.approx(60e6 / 452_830)
    assert piece.events[: len(seed.events)] == seed.events
    assert all(abs(e.onset * GRID - round(e.onset * GRID)) < 1e-6 for e in piece.events)
