"""Standard MIDI Files in: seeds and melodies from untrusted users, read within limits.

The reader is a small parser of its own rather than mido's, so every limit (bytes, tracks, messages, notes,
wall-clock time) is checked while reading, a damaged track still gives the notes read before the damage,
and every way a file can be bad ends as one `BadSeed` with a message a user understands. Writing is in
`bot.music.midi_out`.
"""

from __future__ import annotations

import logging
import math
import struct
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot.errors import BadSeed
from bot.music.events import Piece, group_notes
from bot.music.midi_tempo import TempoMap, continuation_tempo
from bot.paths import checked_file, size_text

log = logging.getLogger(__name__)

_DRUMS = 9  # channel 10, counted from 0
_DATA_BYTES = {0x80: 2, 0x90: 2, 0xA0: 2, 0xB0: 2, 0xC0: 1, 0xD0: 1, 0xE0: 2}
_CHECK_EVERY = 1024  # messages between deadline checks: often enough to keep it, rare enough to be cheap
_MIB = 1024 * 1024
MUTE_VELOCITY = 80  # for notes a file struck at velocity 0 (see _Track.mute): the model's own notes' level
_MAX_METERS = 64  # time signatures kept per track: the seed's meter is the one in force at its end
# What a parser bug on a hostile file could raise; read_midi turns these into BadSeed, never lets them out.
_PARSE_ERRORS = (
    ZeroDivisionError,
    IndexError,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    OverflowError,
    FloatingPointError,
)


@dataclass(frozen=True)
class SeedLimits:
    """How much of an untrusted MIDI file the reader is willing to look at."""

    max_bytes: int = 2 * _MIB  # bigger files are refused before parsing
    max_tracks: int = 512
    max_messages: int = 1_000_000  # raw MIDI messages across tracks; more -> refuse
    max_notes: int = 4096  # when a file has more, the LAST ones are kept: the continuation follows the end
    max_seconds: float = 20 * 60  # notes starting later than this (real time, tempo map applied) are dropped
    max_note_seconds: float = 30.0  # a longer note (incl. one never released) is cut to this
    parse_seconds: float = 5.0  # wall-clock deadline for the whole parse


DEFAULT_LIMITS = SeedLimits()


class _Damaged(Exception):
    """A track stops making sense here; the notes read before it are kept."""


@dataclass
class _Track:
    """One track's notes in ticks, its tempo changes, and the tick its last message is at."""

    on: array = field(default_factory=lambda: array("q"))
    off: array = field(default_factory=lambda: array("q"))
    pitch: array = field(default_factory=lambda: array("B"))
    velocity: array = field(default_factory=lambda: array("B"))
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, microseconds per beat)
    pedal: list[tuple[int, int]] = field(default_factory=list)  # (tick, CC64 value)
    mute: list[tuple[int, int, int]] = field(default_factory=list)  # (on, off, pitch) struck at velocity 0
    meters: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, numerator, denominator)
    end: int = 0
    name: str = ""


def _text(raw: bytes) -> str:
    # Names are for logs only: UTF-8 if they are, else Latin-1 (what mido writes), which decodes anything.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return "".join(c for c in text if c.isprintable()).strip()


class _Reader:
    """One parse of one file: the buffer, the limits, and what was counted on the way."""

    def __init__(self, data: bytes, limits: SeedLimits) -> None:
        self.buf = data
        self.limits = limits
        self.deadline = time.monotonic() + limits.parse_seconds
        self.messages = 0
        self.next_check = 0
        self.drum_notes = 0
        self.unreleased = 0
        self.damage: list[str] = []

    def check_time(self) -> None:
        if time.monotonic() >= self.deadline:
            raise BadSeed("the seed took too long to read")

    # -- bytes -> tracks -----------------------------------------------------------------------------------
    def header(self) -> tuple[int, int, int, int]:
        """(format, declared tracks, division, offset of the first chunk after the header)."""
        buf = self.buf
        if buf[:4] == b"RIFF" and buf[8:12] == b"RMID":
            # An RMID file is a Standard MIDI File wrapped in a RIFF "data" chunk.
            start = buf.find(b"MThd", 12)
            if start < 0:
                raise BadSeed("the seed is not a MIDI file")
            buf = self.buf = buf[start:]
        if buf[:4] != b"MThd":
            raise BadSeed("the seed is not a MIDI file")
        if len(buf) < 14:
            raise BadSeed("the seed MIDI file is damaged: it ends inside its header")
        length, fmt, ntrks, division = struct.unpack(">IHHH", buf[4:14])
        if length < 6:
            raise BadSeed("the seed MIDI file is damaged: its header is too short")
        first = 8 + length if 8 + length <= len(buf) else 14  # a lying header length: try right after it
        return fmt, ntrks, division, first

    def tracks(self, pos: int) -> list[_Track]:
        """Every track chunk from `pos` on, parsed; found even when chunk lengths lie."""
        buf, found = self.buf, []
        while pos + 8 <= len(buf):
            self.check_time()
            cid = buf[pos : pos + 4]
            length = int.from_bytes(buf[pos + 4 : pos + 8], "big")
            if cid == b"MTrk":
                if len(found) >= self.limits.max_tracks:
                    raise BadSeed(f"the seed has more than {self.limits.max_tracks} tracks")
                start = pos + 8
                if start + length <= len(buf):
                    found.append(self.track(start, start + length)[0])
                    pos = start + length
                else:
                    # The length runs past the file: read to the track's end, then look for more tracks.
                    self.damage.append("a track is shorter than its header says")
                    track, pos = self.track(start, len(buf))
                    found.append(track)
            elif cid.isalpha() and pos + 8 + length <= len(buf):
                pos += 8 + length  # a chunk type this reader does not know: skipped, as the standard asks
            else:
                # A chunk length lied and left us inside data: carry on at the next track header.
                nxt = buf.find(b"MTrk", pos + 1)
                if nxt < 0:
                    if buf[pos:].strip(b"\0"):
                        self.damage.append("it has stray bytes between tracks")
                    break
                self.damage.append("a chunk length is wrong")
                pos = nxt
        return found

    def _vlq(self, pos: int, end: int) -> tuple[int, int]:
        buf, value = self.buf, 0
        for _ in range(4):
            if pos >= end:
                raise _Damaged("a track ends in the middle of a message")
            b = buf[pos]
            pos += 1
            value = (value << 7) | (b & 0x7F)
            if b < 0x80:
                return value, pos
        raise _Damaged("a time or length value is too long")

    def track(self, pos: int, end: int) -> tuple[_Track, int]:
        """One track chunk and where its parse stopped; damage stops it, keeping what came before."""
        buf, limits, tr = self.buf, self.limits, _Track()
        active: dict[int, tuple[int, int]] = {}  # channel << 7 | pitch -> (onset tick, velocity)
        struck_mute: dict[int, int] = {}  # channel << 7 | pitch -> tick of a velocity-0 note-on
        tick = status = 0

        def close(key: int, at: int) -> None:
            on, vel = active.pop(key)
            tr.on.append(on)
            tr.off.append(at)
            tr.pitch.append(key & 0x7F)
            tr.velocity.append(vel)

        try:
            while pos < end:
                self.messages += 1
                if self.messages > limits.max_messages:
                    raise BadSeed(f"the seed has more than {limits.max_messages:,} MIDI messages")
                if self.messages >= self.next_check:
                    self.check_time()
                    self.next_check = self.messages + _CHECK_EVERY
                delta, pos = self._vlq(pos, end)
                tick += delta
                tr.end = tick
                if pos >= end:
                    raise _Damaged("a track ends in the middle of a message")
                b = buf[pos]
                if b == 0xFF:  # meta event
                    if pos + 1 >= end:
                        raise _Damaged("a track ends in the middle of a message")
                    kind = buf[pos + 1]
                    length, pos = self._vlq(pos + 2, end)
                    if pos + length > end:
                        raise _Damaged("a track ends in the middle of a message")
                    payload = buf[pos : pos + length]
                    pos += length
                    if kind == 0x2F:
                        break
                    if kind == 0x51 and length >= 3:
                        tr.tempos.append((tick, int.from_bytes(payload[:3], "big")))
                    elif kind == 0x58 and length >= 2 and len(tr.meters) < _MAX_METERS:
                        tr.meters.append((tick, payload[0], 1 << min(payload[1], 6)))
                    elif kind == 0x03 and not tr.name:
                        tr.name = _text(payload[:64])
                    continue
                if b in (0xF0, 0xF7):  # sysex: skipped whole
                    length, pos = self._vlq(pos + 1, end)
                    if pos + length > end:
                        raise _Damaged("a track ends in the middle of a message")
                    pos += length
                    continue
                if b >= 0xF0:
                    raise _Damaged(f"a track has an unexpected byte 0x{b:02X}")
                if b >= 0x80:
                    status = b
                    pos += 1
                elif not status:
                    raise _Damaged("a track has data before any message")
                n = _DATA_BYTES[status & 0xF0]
                if pos + n > end:
                    raise _Damaged("a track ends in the middle of a message")
                data = buf[pos : pos + n]
                pos += n
                if max(data) >= 0x80:
                    raise _Damaged("a message is cut short")
                kind, channel = status & 0xF0, status & 0x0F
                if kind == 0xB0 and data[0] == 64 and channel != _DRUMS:
                    if len(tr.pedal) < limits.max_notes:
                        tr.pedal.append((tick, data[1]))
                    continue
                if kind not in (0x80, 0x90):
                    continue
                if channel == _DRUMS:
                    self.drum_notes += int(kind == 0x90 and data[1] > 0)
                    continue
                key = channel << 7 | data[0]
                if kind == 0x90 and data[1] > 0:
                    if key in active:  # the same pitch again before its release: end the first one here
                        close(key, tick)
                    active[key] = (tick, data[1])
                    struck_mute.pop(key, None)
                elif key in active:  # note-off, or note-on with velocity 0
                    close(key, tick)
                elif kind == 0x90:
                    struck_mute[key] = tick
                elif key in struck_mute and len(tr.mute) < limits.max_notes:
                    tr.mute.append((struck_mute.pop(key), tick, key & 0x7F))
        except _Damaged as err:
            self.damage.append(str(err))
        self.unreleased += len(active)
        for key in list(active):
            close(key, tr.end)
        return tr, pos

    # -- ticks -> beats and seconds ---------------------------------------------------------------------
    def notes(self, tracks: list[_Track], maps: list[TempoMap]) -> dict[str, np.ndarray]:
        """Every note's onset and offset in beats and seconds, and the tempo at its onset.

        Each `maps[k]` is the tempo map of the k-th group of tracks: one group playing together (formats
        0 and 1), or one group per track laid one after another (format 2). A note longer than
        `max_note_seconds` is cut there, measured in real time.
        """
        limit = self.limits.max_note_seconds
        groups = [tracks] if len(maps) == 1 else [[tr] for tr in tracks]
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("on_s", "off_s", "on_b", "off_b", "us", "cut")}
        at_s = at_b = 0.0
        for group, tm in zip(groups, maps):
            on = np.concatenate([np.frombuffer(tr.on, dtype=np.int64) for tr in group]).astype(np.float64)
            off = np.concatenate([np.frombuffer(tr.off, dtype=np.int64) for tr in group]).astype(np.float64)
            on_s, off_s = tm.seconds(on), tm.seconds(off)
            cut = off_s - on_s > limit
            off_s = np.where(cut, on_s + limit, off_s)
            off_b = np.where(cut, tm.beats_at_seconds(off_s), tm.beats(off))
            cols["on_s"].append(on_s + at_s)
            cols["off_s"].append(off_s + at_s)
            cols["on_b"].append(tm.beats(on) + at_b)
            cols["off_b"].append(off_b + at_b)
            cols["us"].append(tm.us[tm.at(on)])
            cols["cut"].append(cut)
            end = np.array([float(max(tr.end for tr in group))])
            at_s += float(tm.seconds(end)[0])
            at_b += float(tm.beats(end)[0])
        return {k: np.concatenate(v) for k, v in cols.items()}

    def piece(self, name: str) -> Piece:
        limits = self.limits
        fmt, declared, division, first = self.header()
        if division & 0x8000:
            # SMPTE: ticks are fractions of a frame, real time whatever the tempo says.
            fps = 256 - (division >> 8)
            per_frame = division & 0xFF
            if per_frame == 0:
                raise BadSeed("the seed MIDI file is damaged: its time division is 0")
            ticks_per_second = (29.97 if fps == 29 else fps) * per_frame
            ticks_per_beat = 0
        else:
            if division == 0:
                raise BadSeed("the seed MIDI file is damaged: its time division is 0")
            ticks_per_beat, ticks_per_second = division, 0.0

        tracks = self.tracks(first)
        self.check_time()
        if not tracks:
            raise BadSeed("the seed MIDI file has no tracks")
        muted = 0
        if not any(len(tr.on) for tr in tracks):
            # Every note struck at velocity 0 and ended by a note-off: a writer that lost its velocities.
            for tr in tracks:
                for on, off, pitch in tr.mute:
                    tr.on.append(on)
                    tr.off.append(off)
                    tr.pitch.append(pitch)
                    tr.velocity.append(MUTE_VELOCITY)
                muted += len(tr.mute)
        all_tempos = sorted((t for tr in tracks for t in tr.tempos), key=lambda t: t[0])
        if fmt == 2:
            # Format 2 tracks are independent sequences (patterns, songs) with their own tempo maps:
            # they are laid one after another, each starting where the previous one ended.
            maps = [TempoMap.build(tr.tempos, ticks_per_beat, ticks_per_second) for tr in tracks]
            first_tempo = next((tr.tempos[0][1] for tr in tracks if tr.tempos), None)
        else:
            # Formats 0 and 1 (and unknown ones, read leniently): tracks play together on one tempo map.
            maps = [TempoMap.build(all_tempos, ticks_per_beat, ticks_per_second)]
            first_tempo = all_tempos[0][1] if all_tempos else None
        n = self.notes(tracks, maps)
        on_s, on_q, dur_q, us = n["on_s"], n["on_b"], n["off_b"] - n["on_b"], n["us"]
        pitch = np.concatenate([np.frombuffer(tr.pitch, dtype=np.uint8) for tr in tracks]).astype(int)
        velocity = np.concatenate([np.frombuffer(tr.velocity, dtype=np.uint8) for tr in tracks]).astype(int)
        notes_read = len(on_s)

        cut = int(np.count_nonzero(n["cut"]))
        keep = on_s <= limits.max_seconds
        late = notes_read - int(np.count_nonzero(keep))
        on_q, dur_q, pitch, velocity, us = on_q[keep], dur_q[keep], pitch[keep], velocity[keep], us[keep]
        order = np.lexsort((pitch, on_q))
        over = max(0, len(order) - limits.max_notes)
        order = order[over:]
        on_q, dur_q, pitch, velocity, us = on_q[order], dur_q[order], pitch[order], velocity[order], us[order]

        tempo = continuation_tempo(on_q, us)
        shift = 0.0
        if over and len(on_q):
            # The kept notes start late in the file: move them to the front by whole 4/4 bars.
            shift = math.floor(float(on_q[0]) / 4) * 4
            on_q = on_q - shift
        meters = []
        if fmt != 2:  # a format 2 file's tracks are separate pieces: its meter is estimated from its notes
            ticks = sorted((m for tr in tracks for m in tr.meters), key=lambda m: m[0])
            at = maps[0].beats(np.array([m[0] for m in ticks], np.float64)) if ticks else []
            meters = [(round(float(b) - shift, 6), n, d) for b, (_, n, d) in zip(at, ticks)]
        self.check_time()
        events = group_notes(zip(on_q.tolist(), dur_q.tolist(), pitch.tolist(), velocity.tolist()))
        pedal: tuple[tuple[float, int], ...] = ()
        if fmt != 2 and len(on_q):
            # The sustain pedal in beats, down (127) or up (0) where it changes; not format 2's.
            ticks = np.array([t for tr in tracks for t, _ in tr.pedal], dtype=np.float64)
            values = [v >= 64 for tr in tracks for _, v in tr.pedal]
            beats = maps[0].beats(ticks) - shift if len(ticks) else ticks
            state, changes = False, []
            for i in np.argsort(beats, kind="stable"):
                if values[i] != state and beats[i] >= 0:
                    state = values[i]
                    changes.append((round(float(beats[i]), 4), 127 if state else 0))
            pedal = tuple(changes)
        meta = {
            "format": fmt,
            "tracks": len(tracks),
            "declared_tracks": declared,
            "ticks_per_beat": ticks_per_beat or None,
            "smpte_ticks_per_second": ticks_per_second or None,
            "file_tempo_us_per_beat": first_tempo,
            "tempo_changes": len(all_tempos),
            "tempo_at_end_bpm": round(tempo, 3),
            "messages": self.messages,
            "notes_read": notes_read,
            "drum_notes_ignored": self.drum_notes,
            "notes_never_released": self.unreleased,
            "velocities_zero": muted,
            "pedal_changes": len(pedal),
            "notes_cut_long": cut,
            "notes_dropped_late": late,
            "notes_dropped_over_limit": over,
            "quarters_removed_from_start": shift,
            "time_signatures": meters,
            "damage": self.damage[:10],
            "track_names": [tr.name for tr in tracks if tr.name][:16],
        }
        if not events:
            if self.damage:
                raise BadSeed(f"the seed MIDI file is damaged: {self.damage[0]}")
            if late and late == notes_read:
                raise BadSeed(
                    f"every note of the seed starts after its first {limits.max_seconds:g} s, "
                    "the most a seed may last"
                )
            if self.drum_notes and not notes_read:
                raise BadSeed(f"the seed has only drum notes ({self.drum_notes}), and drums are ignored")
            raise BadSeed("the seed has no notes")
        return Piece(name, events, tempo, meta, pedal)


def read_midi(data: bytes, name: str = "seed", limits: SeedLimits = DEFAULT_LIMITS) -> Piece:
    """The notes of an untrusted Standard MIDI File; any problem raises `BadSeed`."""
    if not data:
        raise BadSeed("the seed file is empty")
    if len(data) > limits.max_bytes:
        raise BadSeed(f"the seed is larger than {size_text(limits.max_bytes)}")
    try:
        return _Reader(bytes(data), limits).piece(name)
    except BadSeed:
        raise
    except _PARSE_ERRORS as err:
        # The parser is meant to catch all damage itself; this is the net under it.
        log.warning("seed %r: unexpected %s: %s", name, type(err).__name__, err)
        raise BadSeed("the seed MIDI file is damaged") from err


def read_bounded(path: Path, max_bytes: int, what: str, error: type[Exception] = BadSeed) -> bytes:
    """A file's bytes, refused by its size before it is read; `what` names it in the one-line errors."""
    path = checked_file(path, what, max_bytes, error)
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)  # the file may have grown since it was checked
    except OSError as err:
        raise error(f"{what} cannot be read: {err.strerror or err}") from err
    if len(data) > max_bytes:
        raise error(f"{what} is larger than {size_text(max_bytes)}")
    return data


def read_midi_file(path: Path, limits: SeedLimits = DEFAULT_LIMITS) -> Piece:
    """`read_midi` on a file, refused by its size before it is read."""
    data = read_bounded(path, limits.max_bytes, "the seed")
    return read_midi(data, Path(path).stem or "seed", limits)
