"""The sampling loop's state and its book-keeping: what one step of `bot.model.sample`'s compiled loop
carries to the next, and how a token just chosen updates it (the stream, the onsets counted, the caps and
the repetition guard, the pitches of the frame being written and of the last onset, the harmonies and
the pitch-class histogram the rules of `bot.model.masks` read). Written in `keras.ops`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bot.model.form import Form
from bot.model.masks import MAX_CHORD, PIANO_KEYS
from bot.music.encoding import PIANO_LOW, Vocabulary
from bot.music.events import GRID


class Loop(NamedTuple):
    """What the sampling loop carries from one step to the next; all but `t` are per request."""

    t: object  # step: position in the stream of the token just written
    tok: object  # the token just written, input to this step
    states: object  # LSTM (h, c) per layer
    out: object  # (batch, steps) the stream so far, a fixed-size buffer written one column per step
    events: object  # onsets (frames that start a note) written after the primer
    attacked: object  # whether the frame being written has started a note yet
    cadence: object  # whether the last frame closed a phrase (a fermata)
    quiet: object  # frames in a row that started no note
    done: object
    steps: object  # stream length once done
    run: object  # how many times in a row the last event has repeated
    cur_hash: object  # hash of the event being written
    prev_hash: object  # hash of the last complete event
    cur_first: object  # first pitch of the event being written
    prev_first: object  # first pitch of the last complete event
    chord: object  # pitches in the event being written
    shifts: object  # consecutive shift tokens
    frame: object  # (batch, MAX_CHORD) the pitches of the frame being written, ascending (`chord` of them)
    last: object  # (batch, MAX_CHORD) the pitches of the last frame that started a note, ascending
    last_n: object  # how many pitches that frame sounds
    sounding: object  # (batch, PIANO_KEYS) the pitches sounding after the last frame: those a frame may hold
    harm: object  # chord id (bot.music.analysis.chord_table) of the last harmony, -1 before the first
    before: object  # chord id of the harmony before it
    cad_ok: object  # whether the last frame that started a note closes a cadence onto the tonic
    gap: object  # steps since the last frame
    idle: object  # steps since the last frame that started a note
    hist: object  # (batch, 12) float32: how long each pitch class has sounded, in steps
    minor: object  # whether the piece ends in A minor (else C major)
    clock: object  # steps from the last beat of the seed's file (mod GRID) to the last frame sampled
    bars: object  # steps per bar (the seed's meter; 4/4 without one)
    bar_pos: object  # steps from the last downbeat to the time the stream has reached, primer included
    bar_no: object  # downbeats the stream has passed, primer included
    phrases: object  # phrases closed after the primer
    ph_steps: object  # steps since the current phrase began
    ph_start: object  # stream position of the current phrase's first pitch, -1 until it is written
    ph_prev: object  # stream position of the previous phrase's first token, -1 before the second phrase
    ptr: object  # stream position of the token a returning phrase copies next, -1 when none returns
    waiting: object  # whether that phrase waits for its first pitch (the shifts after a fermata are free)
    returned: object  # how many phrases in a row, up to the current one, are returns (`bot.model.form`)


class Book:
    """Starts the loop's state for a batch and advances it by one token; built while the loop is traced."""

    def __init__(self, ops, vocab: Vocabulary, params: dict):
        self.ops = ops
        self.v = len(vocab)
        self.kinds, self.attack, self.tok_pitch = params["kinds"], params["attack"], params["pitch"]
        self.steps = params["steps"]
        self.end_id, self.phrase_id, self.shift_base = vocab.end, vocab.phrase, vocab.shift_base
        # Events are compared by a polynomial hash in base v that never leaves int32 (JAX's default
        # integer): two different events collide with a chance of about v / 2**31.
        self.hash_mod = (2**31 - 1) // self.v
        self.slots = ops.arange(MAX_CHORD, dtype="int32")
        self.keys = ops.arange(PIANO_KEYS, dtype="int32") + PIANO_LOW
        self.pitch_class = ops.convert_to_tensor(_PITCH_CLASS)
        self.form = Form(ops)

    def start(
        self,
        primers,
        max_steps: int,
        hidden: int,
        layers: int,
        asked_minor,
        phases,
        bars,
        bar_starts,
    ) -> Loop:
        """The state before the first step: the primer's first token in, nothing counted yet; `bar_starts`
        is where in its bar the primer's time begins."""
        ops = self.ops
        b = ops.shape(primers)[0]
        zeros = ops.zeros((b, hidden), "float32")
        izeros = ops.zeros((b,), "int32")
        return Loop(
            t=ops.convert_to_tensor(0, "int32"),
            tok=primers[:, 0],
            states=[(zeros, zeros) for _ in range(layers)],
            out=ops.slice_update(ops.zeros((b, max_steps), "int32"), (0, 0), primers[:, :1]),
            events=izeros,
            attacked=ops.zeros((b,), "bool"),
            cadence=ops.zeros((b,), "bool"),
            quiet=izeros,
            done=ops.zeros((b,), "bool"),
            steps=izeros + max_steps,
            run=izeros,
            cur_hash=izeros - 1,
            prev_hash=izeros - 2,  # never equal to the first event's hash
            cur_first=izeros,
            prev_first=izeros - 1,
            chord=izeros,
            shifts=izeros,
            frame=ops.zeros((b, MAX_CHORD), "int32"),
            last=ops.zeros((b, MAX_CHORD), "int32"),
            last_n=izeros,
            sounding=ops.zeros((b, PIANO_KEYS), "bool"),
            harm=izeros - 1,
            before=izeros - 1,
            cad_ok=ops.zeros((b,), "bool"),
            gap=izeros,
            idle=izeros,
            hist=ops.zeros((b, 12), "float32"),
            minor=asked_minor,
            clock=phases,
            bars=bars,
            bar_pos=bar_starts,
            bar_no=izeros,
            phrases=izeros,
            ph_steps=izeros,
            ph_start=izeros - 1,
            ph_prev=izeros - 1,
            ptr=izeros - 1,
            waiting=ops.zeros((b,), "bool"),
            returned=izeros,
        )

    def advance(
        self, s: Loop, nxt, kind, in_primer, states, chord, final, minor, forms, plans, copied
    ) -> Loop:
        """All the loop's book-keeping: the stream, the event count, the caps, the repetition guard,
        the pitches of this frame and the last, the harmonies the end is steered by, and the plan of
        returning phrases (`forms` the requests that follow one, `plans` its uniforms, `copied` the token
        a returning phrase offered this step)."""
        ops = self.ops
        nk = ops.take(self.kinds, nxt)
        starts_event = (nk == 1) & (kind != 1)
        cur_hash = ops.where(starts_event, nxt, (s.cur_hash * self.v + nxt) % self.hash_mod)
        cur_first = ops.where((nk == 2) & (kind == 1), nxt, s.cur_first)
        closes = (nk == 3) & ~s.done
        attacked = ops.where(nk == 1, False, s.attacked | ops.take(self.attack, nxt))
        events = s.events + ops.cast(closes & attacked & ~in_primer, "int32")
        finished = (nxt == self.end_id) & ~in_primer & ~s.done
        frame = ops.where(
            (nk == 2)[:, None] & (self.slots[None, :] == s.chord[:, None]),
            ops.take(self.tok_pitch, nxt)[:, None],
            s.frame,
        )
        onset = closes & attacked
        in_frame = self.slots[None, :] < s.chord[:, None]
        now_sounding = ops.any(in_frame[:, :, None] & (frame[:, :, None] == self.keys[None, None, :]), axis=1)
        new_harmony = onset & (chord >= 0) & (chord != s.harm)
        heard = ops.matmul(ops.cast(s.sounding, "float32"), self.pitch_class)  # (B, 12) what sounded since
        moved = ops.where(nk == 1, ops.take(self.steps, nxt), 0)
        bar_no = self.form.bars_after(s, moved)
        fermata = closes & (nxt == self.phrase_id) & ~in_primer
        plan = self.form.step(
            s,
            nxt,
            copied,
            nk == 1,
            moved,
            in_primer,
            self.form.phrase_end(s, moved, fermata, forms, in_primer, bar_no),
            forms,
            plans,
        )
        return Loop(
            t=s.t + 1,
            tok=nxt,
            states=states,
            out=ops.slice_update(s.out, (0, s.t + 1), nxt[:, None]),
            events=events,
            attacked=attacked,
            cadence=ops.where(closes, nxt == self.phrase_id, s.cadence),
            quiet=ops.where(closes, ops.where(attacked, 0, s.quiet + 1), s.quiet),
            done=s.done | finished,
            steps=ops.where(finished, s.t + 2, s.steps),
            run=ops.where(closes, ops.where(cur_hash == s.prev_hash, s.run + 1, 1), s.run),
            cur_hash=cur_hash,
            prev_hash=ops.where(closes, cur_hash, s.prev_hash),
            cur_first=cur_first,
            prev_first=ops.where(closes, cur_first, s.prev_first),
            chord=ops.where(nk == 2, s.chord + 1, ops.where(nk == 1, 0, s.chord)),
            shifts=ops.where(nk == 1, ops.where(kind == 1, s.shifts + 1, 1), 0),
            frame=frame,
            last=ops.where(onset[:, None], frame, s.last),
            last_n=ops.where(onset, s.chord, s.last_n),
            sounding=ops.where(closes[:, None], now_sounding, s.sounding),
            harm=ops.where(new_harmony, chord, s.harm),
            before=ops.where(new_harmony, s.harm, s.before),
            cad_ok=ops.where(onset, final, s.cad_ok),
            gap=ops.where(nk == 1, s.gap + nxt - self.shift_base, ops.where(closes, 0, s.gap)),
            idle=ops.where(nk == 1, s.idle + nxt - self.shift_base, ops.where(onset, 0, s.idle)),
            hist=s.hist + ops.cast(ops.where(closes, s.gap, 0), "float32")[:, None] * heard,
            minor=minor,
            clock=ops.where((nk == 1) & ~in_primer, (s.clock + ops.take(self.steps, nxt)) % GRID, s.clock),
            bars=s.bars,
            bar_pos=(s.bar_pos + moved) % s.bars,
            bar_no=bar_no,
            **plan,
        )


# (piano key, pitch class) one-hot: sounding keys -> sounding pitch classes.
_PITCH_CLASS = np.eye(12, dtype=np.float32)[(np.arange(PIANO_KEYS) + PIANO_LOW) % 12]
