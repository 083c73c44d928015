"""Tests for bot.render.parts and the renders built on it: a piece cut by time, its parts played by several
real FluidSynth synths at once (threads in this process, or processes of the pool) and added up."""

from __future__ import annotations

import io
from dataclasses import replace

import mido
import numpy as np
import pytest

from bot.errors import RenderError
from bot.music.events import Event
from bot.music.midi_out import midi_bytes
from bot.render.audio import find_soundfont
from bot.render.files import render_here
from bot.render.parts import ONSET_SECONDS, Part, _timeline, mix, play_parts, split_midi
from bot.render.pool import RenderPool, render_on
from bot.render.synth import Synth, SynthSettings
from tests.test_render import kinds, needs_renderer, piece, request, sound

RATE = 48000


def notes(midi: bytes, offset: float = 0.0) -> list[tuple[float, float, int, int]]:
    """(start s, end s, pitch, velocity) of every note in `midi`, times shifted by `offset` seconds."""
    now, open_, out = offset, {}, []
    for msg in mido.MidiFile(file=io.BytesIO(midi)):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            open_[msg.note] = (now, msg.velocity)
        elif msg.type in ("note_on", "note_off") and msg.note in open_:
            start, velocity = open_.pop(msg.note)
            out.append((round(start, 4), round(now, 4), msg.note, velocity))
    return sorted(out)


def programs(midi: bytes) -> list[tuple[float, int]]:
    now, out = 0.0, []
    for msg in mido.MidiFile(file=io.BytesIO(midi)):
        now += msg.time
        if msg.type == "program_change":
            out.append((round(now, 4), msg.program))
    return out


def test_each_note_is_played_by_the_one_part_it_starts_in() -> None:
    events = piece(70.0)
    midi = midi_bytes(events, tempo=100.0, program=40)
    parts = split_midi(midi, 3, RATE)
    assert len(parts) == 3 and parts[0].offset == 0
    offsets = [p.offset for p in parts]
    assert offsets == sorted(offsets) and all(o % 192 == 0 for o in offsets)  # 64-frame blocks, whole ms
    played = sorted(n for p in parts for n in notes(p.midi, p.offset / RATE))
    assert played == notes(midi)  # every note once, at its time, with its length and loudness
    for p in parts:
        assert programs(p.midi)[0] == (0.0, 40)  # the violin, set up before the part's first note
        starts = [n[0] for n in notes(p.midi)]
        assert min(starts) >= 0.0
    # A chord held across a cut stays whole, in the part where it starts.
    held = [n for n in notes(parts[0].midi, 0.0) if n[1] > parts[1].offset / RATE]
    assert held and all(n[0] < parts[1].offset / RATE for n in held)


def test_a_short_piece_or_a_single_synth_is_not_cut() -> None:
    midi = midi_bytes(piece(20.0))
    assert split_midi(midi, 4, RATE) == [Part(0, midi)]  # two parts would be under 15 s each
    assert split_midi(midi_bytes(piece(120.0)), 1, RATE) == [Part(0, midi_bytes(piece(120.0)))]
    assert len(split_midi(midi_bytes(piece(120.0)), 8, RATE)) == 7  # 15 s or more each
    silent = mido.MidiFile()
    silent.tracks.append(mido.MidiTrack([mido.Message("program_change", program=3)]))
    buf = io.BytesIO()
    silent.save(file=buf)
    assert split_midi(buf.getvalue(), 2, RATE) == [Part(0, buf.getvalue())]


def test_a_dense_stretch_is_a_shorter_part_so_the_parts_cost_alike() -> None:
    # 60 s of one note a second, then 60 s of four a second: cut at equal time, the second part would
    # hold four times the notes.
    sparse = [Event(float(b), 1.0, (60 + b % 12,), 80) for b in range(60)]
    dense = [Event(60.0 + b / 4, 0.25, (72 + b % 12,), 80) for b in range(240)]
    midi = midi_bytes(sparse + dense, tempo=60.0)
    parts = split_midi(midi, 2, RATE)
    cut = parts[1].offset / RATE
    assert 60.0 < cut < 90.0
    onsets = [n[0] for p in parts for n in notes(p.midi, p.offset / RATE)]
    first = sum(t < cut for t in onsets)
    costs = [cut + ONSET_SECONDS * first, (onsets[-1] - cut) + ONSET_SECONDS * (len(onsets) - first)]
    assert abs(costs[0] - costs[1]) < 0.05 * sum(costs)
    assert sorted(n for p in parts for n in notes(p.midi, p.offset / RATE)) == notes(midi)


@needs_renderer
@pytest.mark.timeout(120)
def test_a_synth_reuses_its_buffers_and_plays_the_same_samples() -> None:
    """Rendering into the synth's kept buffer (the worker's and `etude compose`'s way) gives what a fresh
    array gets, grows for a longer piece, and mixing in the scratch buffer adds up as a new one does."""
    short, long = midi_bytes(piece(20.0)), midi_bytes(piece(40.0))
    synth = Synth(find_soundfont(), SynthSettings(reverb=False))
    try:
        synth.render(long, 600)  # the first render of a synth loads its samples and differs a little
        fresh = [synth.render(m, 600) for m in (short, long, short)]
        kept = []
        for m in (short, long, short):  # the second outgrows the buffer, the third fits in it
            kept.append(synth.render(m, 600, reuse=True).copy())
        for a, b in zip(fresh, kept):
            assert a.shape == b.shape and np.array_equal(a, b)
        again = synth.render(short, 600, reuse=True)
        assert np.shares_memory(again, synth.render(short, 600, reuse=True))
        assert not np.shares_memory(fresh[0], synth.render(short, 600))
        played = [(p.offset, synth.render(p.midi, 600)) for p in split_midi(long, 2, RATE)]
        assert len(played) == 2
        synth.scratch(len(fresh[1]) + 10)[:] = 7.0  # whatever the buffer held before is not added in
        in_scratch = mix(played, into=synth.scratch)
        assert np.shares_memory(in_scratch, synth.scratch(1)) and np.array_equal(mix(played), in_scratch)
    finally:
        synth.close()


@needs_renderer
@pytest.mark.timeout(120)
def test_parts_played_apart_add_up_to_the_whole_piece() -> None:
    midi = midi_bytes(piece(45.0))
    parts = split_midi(midi, 2, RATE)
    assert len(parts) == 2
    font = find_soundfont()
    for reverb in (False, True):
        synths = [Synth(font, SynthSettings(reverb=reverb)) for _ in range(2)]
        try:
            whole = synths[0].render(midi, 600)
            summed = play_parts(parts, [lambda m, s=s: s.render(m, 600) for s in synths])
        finally:
            for s in synths:
                s.close()
        n = min(len(whole), len(summed))
        assert abs(len(whole) - len(summed)) <= 4800  # the same length, to the synth's 0.1 s blocks
        diff = np.sqrt(np.mean((whole[:n] - summed[:n]) ** 2) / np.mean(whole[:n] ** 2))
        window = RATE // 10
        loudness = [
            np.sqrt((a[: n // window * window] ** 2).reshape(-1, window * 2).mean(1)) for a in (whole, summed)
        ]
        if not reverb:
            assert diff < 1e-3  # the same samples: each note played once, on the same frame
        else:
            # The reverb's slow modulation starts again at the cut: the same sound, not the same samples.
            assert diff < 0.15 and np.corrcoef(*loudness)[0, 1] > 0.999


@needs_renderer
@pytest.mark.timeout(120)
def test_a_performance_with_its_pedal_and_tempo_map_adds_up_in_parts() -> None:
    from bot.music.perform import perform

    performance = perform(piece(45.0), 100.0, 0)
    midi = performance.midi()
    assert performance.pedal and len(performance.tempos) > 2
    parts = split_midi(midi, 2, RATE)
    assert len(parts) == 2
    # The first part keeps the lift of the pedal that holds its last notes, though it comes after them.
    lifts = [t for t, msg in _timeline(midi) if msg.type == "control_change" and msg.value == 0]
    last_own = max(n[1] for n in notes(parts[0].midi))
    first_lift = min(t for t in lifts if t > last_own - 1e-6)
    own_lifts = [t for t, msg in _timeline(parts[0].midi) if msg.type == "control_change" and msg.value == 0]
    assert abs(max(own_lifts) - first_lift) < 1e-3
    font = find_soundfont()
    synths = [Synth(font, SynthSettings(reverb=False)) for _ in range(2)]
    try:
        whole = synths[0].render(midi, 600)
        summed = play_parts(parts, [lambda m, s=s: s.render(m, 600) for s in synths])
        unpedalled = synths[0].render(replace(performance, pedal=[]).midi(), 600)
    finally:
        for s in synths:
            s.close()
    n = min(len(whole), len(summed))
    assert abs(len(whole) - len(summed)) <= 4800
    # FluidSynth's player restarts its clock at each tempo change on its own block boundary, so a whole
    # render drifts from the parts' exact clock by a few milliseconds (4 ms after 40 s, measured): the same
    # sound, not the same samples.
    window = RATE // 10
    loudness = [
        np.sqrt((a[: n // window * window] ** 2).reshape(-1, window * 2).mean(1)) for a in (whole, summed)
    ]
    assert np.corrcoef(*loudness)[0, 1] > 0.999
    # The tempo map reaches the audio: the ritardando and the held last chord make it longer than written.
    assert len(whole) / RATE > performance.seconds(45.0 * 100 / 60) > 45.0 * 1.02
    # And the pedal does: notes held past their release sound fuller than the same notes without it.
    m = min(len(whole), len(unpedalled))
    assert np.mean(whole[:m] ** 2) > 1.05 * np.mean(unpedalled[:m] ** 2)  # 8% more energy, measured


@needs_renderer
@pytest.mark.timeout(120)
def test_a_long_piece_renders_in_parts_in_this_process_with_the_same_files() -> None:
    long = request(60.0)
    apart = render_here(long, cores=2)
    whole = render_here(long, cores=1)
    assert (apart.parts, whole.parts) == (2, 1)
    assert kinds(apart) == kinds(whole) == ["mid", "ogg", "wav", "png"]
    for suffix in ("ogg", "wav"):
        a, b = sound(apart.file(suffix).data)[0], sound(whole.file(suffix).data)[0]
        assert (a.samplerate, a.channels) == (b.samplerate, b.channels)
        assert abs(a.duration - b.duration) < 0.2


@needs_renderer
@pytest.mark.timeout(300)
def test_the_pool_plays_a_long_piece_on_its_idle_processes_and_recovers_from_a_crash_in_a_part() -> None:
    pool = RenderPool(find_soundfont(), size=2, timeout=60, target="tests.render_faults:render")
    pool.start()
    try:
        out = render_on(pool, request(60.0))
        assert out.parts == 2 and kinds(out) == ["mid", "ogg", "wav", "png"]
        assert abs(sound(out.file("ogg").data)[0].duration - out.ogg.seconds) < 0.01
        # A busy pool gives a piece the one process that is free: nothing waits for a second.
        with pool.lease() as busy:
            assert len(busy) == 1
            assert render_on(pool, request(60.0)).parts == 1
        assert render_on(pool, request(5.0)).parts == 1  # too short to be worth cutting
        # Every part of a piece that crashes its synth is lost, and only that piece.
        with pytest.raises(RenderError, match="crashed"):
            render_on(pool, request(60.0, name="crash"))
        assert pool.replaced == 2
        again = render_on(pool, request(60.0))  # waits for the replacements, then plays in parts again
        assert kinds(again) == ["mid", "ogg", "wav", "png"] and len(pool.pids()) == 2
    finally:
        pool.close()


def test_a_piece_is_played_whole_when_the_events_leave_no_room_to_cut() -> None:
    one_chord = midi_bytes([Event(0.0, 200.0, (60, 64, 67))])  # one note, held for two minutes
    assert split_midi(one_chord, 4, RATE) == [Part(0, one_chord)]
