"""Tokens: the only place that knows how music becomes token ids.

A piece is a list of `Event`s (`bot.music.events`). The network does not see events but *frames*
(encoding 2, after BachBot): a frame is written at every time the set of sounding pitches changes (an
onset or a release) and lists **every** sounding pitch, each marked as a new attack (`P60`) or as still
held from before (`H60`), so when the alto moves under a held soprano the network sees the soprano.
Durations are implicit: a note lasts until the first frame that does not hold it. A frame is::

    S<steps> [S<steps> ...]  (P<pitch> | H<pitch>) ...  |   (or |F: a phrase ends here, a fermata)

time since the previous frame (chained when longer than the longest shift; `S0` only for the very first
frame), the pitches ascending, then the closing bar. A frame without pitches is a rest. A piece opens with
`<start>`, an optional style token (`<chorale>`, ...) and its mode (`<major>`/`<minor>`; training pieces
are moved to C major or A minor, see keys.py), and closes with `S<steps> <end>`: the last sounding notes
stop after that shift. Times are counted in the events' `GRID` steps per quarter note. Pitches cover the
piano. The network sees token ids only, never MIDI.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bot.music.events import GRID, Event, Piece, fold_pitch, group_notes, monophonic_notes

ENCODING = 2
MAX_SHIFT = 4 * GRID  # longest single time-shift token; longer gaps chain several
MAX_DURATION = 8 * GRID  # kept for readers of older data: the frames themselves have no duration cap
PIANO_LOW, PIANO_HIGH = 21, 108  # A0 .. C8
UNRELEASED_STEPS = GRID  # a note a cut stream never releases sounds for one beat
PAD, START, END = "<pad>", "<start>", "<end>"
MODES = ("major", "minor")
STYLES = ("chorale", "renaissance", "classical", "folk", "other")  # "other" last: unknown styles fall to it
CLOSE, PHRASE = "|", "|F"


@dataclass
class Vocabulary:
    """Token ids for frames.

    Ids are laid out as: specials (`<pad>`, `<start>`, `<end>`, styles, modes), shifts ascending, attacks
    (`P`) ascending, holds (`H`) ascending, the two closing bars. Attacks and holds each form one
    contiguous range over the piano, so transposing is adding to their ids. `pitch_low`..`pitch_high` is
    the range the training music used (seeds are moved into it by octaves); `key_counts` how often each
    key opened a training piece, so an unseeded piece can draw its key from the corpus's own distribution.
    """

    pitch_low: int = PIANO_LOW
    pitch_high: int = PIANO_HIGH
    key_counts: dict[str, int] = field(default_factory=dict)
    styles: tuple[str, ...] = STYLES

    def __post_init__(self) -> None:
        self.styles = tuple(self.styles)
        self.shifts = list(range(0, MAX_SHIFT + 1))
        self.tokens: list[str] = [PAD, START, END]
        self.style_base = len(self.tokens)
        self.tokens += [f"<{s}>" for s in self.styles]
        self.mode_base = len(self.tokens)
        self.tokens += [f"<{m}>" for m in MODES]
        self.shift_base = len(self.tokens)
        self.tokens += [f"S{s}" for s in self.shifts]
        self.pitch_base = len(self.tokens)
        self.tokens += [f"P{p}" for p in range(PIANO_LOW, PIANO_HIGH + 1)]
        self.hold_base = len(self.tokens)
        self.tokens += [f"H{p}" for p in range(PIANO_LOW, PIANO_HIGH + 1)]
        self.close_base = len(self.tokens)
        self.tokens += [CLOSE, PHRASE]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    # -- sizes and classes -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad(self) -> int:
        return 0

    @property
    def start(self) -> int:
        return 1

    @property
    def end(self) -> int:
        return 2

    @property
    def close(self) -> int:
        return self.close_base

    @property
    def phrase(self) -> int:
        return self.close_base + 1

    @property
    def duration_base(self) -> int:
        """Where the tokens that close a frame begin (the sampler's name from the first encoding)."""
        return self.close_base

    def is_shift(self, t: int) -> bool:
        return self.shift_base <= t < self.pitch_base

    def is_attack(self, t: int) -> bool:
        return self.pitch_base <= t < self.hold_base

    def is_hold(self, t: int) -> bool:
        return self.hold_base <= t < self.close_base

    def is_pitch(self, t: int) -> bool:
        return self.pitch_base <= t < self.close_base

    def is_close(self, t: int) -> bool:
        return t >= self.close_base

    is_duration = is_close

    def pitch_id(self, pitch: int) -> int:
        return self.pitch_base + fold_pitch(pitch, PIANO_LOW, PIANO_HIGH) - PIANO_LOW

    def hold_id(self, pitch: int) -> int:
        return self.hold_base + fold_pitch(pitch, PIANO_LOW, PIANO_HIGH) - PIANO_LOW

    def style_id(self, style: str) -> int:
        return self.index[f"<{style if style in self.styles else self.styles[-1]}>"]

    def mode_id(self, mode: str) -> int:
        return self.index[f"<{mode}>"]

    def head(self, mode: str | None = None, style: str | None = "chorale") -> list[int]:
        """The tokens that open a piece: `<start>`, its style and its mode."""
        ids = [self.start]
        if style:
            ids.append(self.style_id(style))
        if mode:
            ids.append(self.mode_id(mode))
        return ids

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, pieces: Iterable[Sequence[Event] | object], pitch_margin: int = 3) -> Vocabulary:
        """The vocabulary with the pitch range of `pieces` (widened by `pitch_margin`) and their keys.

        `pieces` are event lists or `Piece`s; a Piece whose meta holds a `key` adds it to `key_counts`
        (the chorales' keys alone when they are among other music: the bot writes chorales).
        """
        low, high = PIANO_HIGH, PIANO_LOW
        keys: dict[str, int] = {}
        chorale_keys: dict[str, int] = {}
        any_notes = False
        for item in pieces:
            events = item.events if isinstance(item, Piece) else item
            for e in events:
                if e.pitches:
                    any_notes = True
                    low, high = min(low, *e.pitches), max(high, *e.pitches)
            if isinstance(item, Piece) and item.meta.get("key"):
                key = item.meta["key"]
                keys[key] = keys.get(key, 0) + 1
                if item.meta.get("style") == "chorale":
                    chorale_keys[key] = chorale_keys.get(key, 0) + 1
        if not any_notes:
            raise ValueError("no notes to build a vocabulary from")
        low = max(PIANO_LOW, low - pitch_margin)
        high = min(PIANO_HIGH, high + pitch_margin)
        return cls(low, high, dict(sorted((chorale_keys or keys).items())))

    def to_json(self) -> dict:
        return {
            "encoding": ENCODING,
            "grid": GRID,
            "pitch_low": self.pitch_low,
            "pitch_high": self.pitch_high,
            "styles": list(self.styles),
            "key_counts": self.key_counts,
            "tokens": self.tokens,
        }

    @classmethod
    def from_json(cls, data: dict) -> Vocabulary:
        if data.get("encoding", 1) != ENCODING:
            raise ValueError(
                f"the vocabulary is of token encoding {data.get('encoding', 1)}, this code reads {ENCODING}: "
                "retrain the model (etude train)"
            )
        if data.get("grid", GRID) != GRID:
            raise ValueError(f"vocabulary uses a grid of {data['grid']}, this code {GRID}")
        vocab = cls(
            data["pitch_low"], data["pitch_high"], data.get("key_counts", {}), data.get("styles", STYLES)
        )
        if data.get("tokens") and data["tokens"] != vocab.tokens:
            raise ValueError("the vocabulary's tokens differ from this code's encoding 2")
        return vocab

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls.from_json(json.loads(path.read_text()))

    # -- events <-> tokens -------------------------------------------------------------------------
    def fit_pitch(self, pitch: int) -> int:
        """Move a pitch into the vocabulary's range by octaves."""
        return fold_pitch(pitch, PIANO_LOW, PIANO_HIGH)

    def _shift(self, ids: list[int], delta: int) -> None:
        while delta > MAX_SHIFT:
            ids.append(self.shift_base + MAX_SHIFT)
            delta -= MAX_SHIFT
        ids.append(self.shift_base + delta)

    def encode_frames(
        self,
        events: Sequence[Event],
        head: Sequence[int] | None = None,
        end: bool = True,
    ) -> tuple[list[int], float]:
        """Token ids for `events` and the time (quarter notes) of the last frame written.

        `head` opens the stream (default `<start>` alone). With `end` the stream closes with the final
        release and `<end>`; without it (a seed to continue) it stops after the last frame, the notes of
        that frame still sounding, so the network decides how long they last.
        """
        ids = list(head) if head is not None else [self.start]
        notes = [(on, end_, self.fit_pitch(p), f) for on, end_, p, f in monophonic_notes(events)]
        # Folding may land two notes on one pitch: keep one sounding note per pitch again.
        notes = monophonic_notes([Event(on / GRID, (e - on) / GRID, (p,), 80, f) for on, e, p, f in notes])
        times = sorted({t for on, e, _, _ in notes for t in (on, e)})
        if not times:
            return ids, 0.0
        starts: dict[int, list[tuple[int, int, int, bool]]] = {}
        for n in notes:
            starts.setdefault(n[0], []).append(n)
        sounding: dict[int, tuple[int, bool]] = {}  # pitch -> (end, fermata)
        prev = None
        last_frame = 0
        for t in times:
            sounding = {p: v for p, v in sounding.items() if v[0] > t}
            attacks = {n[2]: (n[1], n[3]) for n in starts.get(t, [])}
            if not sounding and not attacks and t == times[-1]:
                if end:
                    self._shift(ids, t - (prev or 0))
                    ids.append(self.end)
                break
            self._shift(ids, t - prev if prev is not None else t)
            for p in sorted(set(sounding) | set(attacks)):
                ids.append(self.pitch_id(p) if p in attacks else self.hold_id(p))
            ids.append(self.phrase if any(f for _, f in attacks.values()) else self.close)
            sounding.update(attacks)
            prev = last_frame = t
        return ids, last_frame / GRID

    def encode(
        self, events: Sequence[Event], start: bool = True, mode: str | None = None, style=None
    ) -> list[int]:
        """Token ids for a whole piece, `<end>` included."""
        head = self.head(mode, style) if start else []
        return self.encode_frames(events, head)[0]

    def decode(self, ids: Iterable[int], velocity: int = 80) -> list[Event]:
        """Events for token ids, stopping at `<end>`.

        Tolerates malformed sequences: a hold of a pitch that is not sounding is left out, pitches of an
        unclosed frame are dropped, and notes a stream never releases last `UNRELEASED_STEPS`.
        """
        notes: list[tuple[int, int, int, bool]] = []
        sounding: dict[int, tuple[int, bool]] = {}  # pitch -> (onset, fermata)
        pos = 0
        attacks: list[int] = []
        holds: list[int] = []
        for t in ids:
            t = int(t)
            if t == self.end:
                break
            if self.is_shift(t):
                pos += t - self.shift_base
                attacks, holds = [], []
            elif self.is_attack(t):
                attacks.append(PIANO_LOW + t - self.pitch_base)
            elif self.is_hold(t):
                holds.append(PIANO_LOW + t - self.hold_base)
            elif self.is_close(t):
                for p in list(sounding):
                    if p not in holds or p in attacks:
                        on, f = sounding.pop(p)
                        if pos > on:
                            notes.append((on, pos, p, f))
                for p in attacks:
                    sounding[p] = (pos, t == self.phrase)
                attacks, holds = [], []
        last = max([pos] + [on + UNRELEASED_STEPS for on, _ in sounding.values()])
        for p, (on, f) in sounding.items():
            notes.append((on, pos if pos > on else max(last, on + UNRELEASED_STEPS), p, f))
        return group_notes(((on / GRID, (e - on) / GRID, p, velocity, f) for on, e, p, f in notes))

    def onset_mask(self, ids: np.ndarray) -> np.ndarray:
        """True at every closing bar of a frame that attacks at least one pitch (a note or chord starts)."""
        ids = np.asarray(ids)
        attack = (ids >= self.pitch_base) & (ids < self.hold_base)
        frame_start = (ids >= self.shift_base) & (ids < self.pitch_base)
        # Per position: has an attack been written since the last shift?
        frame_no = np.cumsum(frame_start)
        seen = np.zeros(len(ids), bool)
        if len(ids):
            firsts = np.where(attack, frame_no, -1)
            last_attack_frame = np.maximum.accumulate(firsts)
            seen = last_attack_frame == frame_no
        return (ids >= self.close_base) & seen

    def shift_table(self) -> np.ndarray:
        """How many grid steps each token moves time (0 for every token but the shifts); read-only."""
        if getattr(self, "_shift_table", None) is None:
            table = np.array(
                [t - self.shift_base if self.is_shift(t) else 0 for t in range(len(self))], np.int32
            )
            table.flags.writeable = False
            self._shift_table = table
        return self._shift_table

    def count_onsets(self, ids: Iterable[int]) -> int:
        """Notes and chords in `ids`: frames that attack at least one pitch."""
        return int(self.onset_mask(np.fromiter((int(t) for t in ids), dtype=np.int64)).sum())

    count_events = count_onsets  # what evaluation divides by: bits per onset

    def transpose_ids(self, ids: np.ndarray, semitones: int) -> np.ndarray:
        """Token ids moved by `semitones`, pitches that would leave the piano folded back by octaves."""
        ids = np.asarray(ids).copy()
        for base in (self.pitch_base, self.hold_base):
            sel = (ids >= base) & (ids < base + PIANO_HIGH - PIANO_LOW + 1)
            p = ids[sel] - base + PIANO_LOW + semitones
            p = np.where(p < PIANO_LOW, p + 12 * ((PIANO_LOW - p + 11) // 12), p)
            p = np.where(p > PIANO_HIGH, p - 12 * ((p - PIANO_HIGH + 11) // 12), p)
            ids[sel] = p - PIANO_LOW + base
        return ids

    def trim(self, ids: Sequence[int], max_tokens: int) -> list[int]:
        """At most `max_tokens` of a stream: its head (start, style, mode) and its last whole frames."""
        ids = list(ids)
        if len(ids) <= max_tokens:
            return ids
        n_head = 0
        while n_head < len(ids) and ids[n_head] < self.shift_base:
            n_head += 1
        tail_from = len(ids) - (max_tokens - n_head)
        # Start the tail at a frame's first shift, after a closing bar.
        while tail_from < len(ids) and not (
            self.is_shift(ids[tail_from]) and self.is_close(ids[tail_from - 1])
        ):
            tail_from += 1
        return ids[:n_head] + ids[tail_from:]

    def grammar(self) -> np.ndarray:
        """`allowed[prev, next]`: which token may follow which, so a sampler only writes valid streams.

        `<start>` is followed by a style, a mode or the first shift; a frame is shifts, pitches ascending
        (each an attack or a hold), a closing bar; `S0` only opens the very first frame; `<end>` follows
        a shift (the last notes stop there) and only `<end>` follows it.
        """
        n = len(self)
        allowed = np.zeros((n, n), dtype=bool)
        shifts = slice(self.shift_base, self.pitch_base)
        later_shifts = slice(self.shift_base + 1, self.pitch_base)
        styles = slice(self.style_base, self.mode_base)
        modes = slice(self.mode_base, self.shift_base)
        closes = slice(self.close_base, n)
        width = PIANO_HIGH - PIANO_LOW + 1
        for opener in (self.start, self.pad):
            allowed[opener, styles] = True
            allowed[opener, modes] = True
            allowed[opener, shifts] = True
        allowed[styles, modes] = True
        allowed[styles, shifts] = True
        allowed[modes, shifts] = True
        allowed[closes, later_shifts] = True
        allowed[shifts, later_shifts] = True
        allowed[shifts, self.pitch_base : self.close_base] = True
        allowed[shifts, closes] = True
        allowed[shifts, self.end] = True
        allowed[self.end, self.end] = True
        for i in range(width):
            for base in (self.pitch_base, self.hold_base):
                t = base + i
                allowed[t, self.pitch_base + i + 1 : self.hold_base] = True
                allowed[t, self.hold_base + i + 1 : self.close_base] = True
                allowed[t, closes] = True
        return allowed
