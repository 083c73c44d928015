"""The rules the sampler's compiled loop applies at every step: which tokens may come next, and which it prefers.

Each rule narrows a (batch, vocabulary) boolean mask of the tokens allowed next:

- the grammar: only tokens that may follow the previous one, within caps on chord size, rests, quiet
  frames and the time between two notes' starts; a frame holds only pitches that sound; the same event
  may not repeat for ever;
- the key: the piece's mode (C major or A minor, as the network writes) from a pitch-class histogram
  weighed with the Krumhansl-Schmuckler profiles, settled before the ending;
- the grid: a seed that keeps to an eighth or sixteenth grid is continued on it;
- the ending: not before `length` onsets, past it only on a cadence onto the tonic, at `limits` at the
  latest, and as the margin runs out the last two onsets steered into V-I (`analysis.leads_to`,
  `analysis.is_tonic_triad` in tensors);
- voice leading: no pitch that moves in parallel fifths or octaves with a lower voice, its probability
  handed to the other pitches.

A steer (`_prefer`) narrows the mask only where that leaves a request some token, so no rule is a dead end.
Everything is written in `keras.ops` on the loop's state (`bot.model.loop_state.Loop`, called `s` here).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from bot.music.encoding import PIANO_HIGH, PIANO_LOW, Vocabulary
from bot.music.events import GRID
from bot.music.keys import Key, key_profile

MAX_RUN = 4  # a frame may repeat at most this many times in a row: the tutorial's loop got stuck on one
MAX_CHORD = 10  # pitches in one frame, held ones included
MAX_SHIFT_CHAIN = 4  # consecutive shift tokens (a rest of up to 16 beats)
MAX_QUIET = 3  # frames in a row that attack nothing (releases, rests) before one must start a note
# Steps from one note's start to the next's: 8 beats. The chorales' longest is 6 (a held fermata); without
# a cap 20 of 200 pieces of 500 notes waited longer, up to 52 beats, 10 of them in silence.
MAX_IDLE = 8 * GRID
PIANO_KEYS = PIANO_HIGH - PIANO_LOW + 1  # pitches a frame may sound

Tensor = Any  # a tensor of the backend in use, as `keras.ops` takes and returns it


class Frame(NamedTuple):
    """What the frame being written spells, per request."""

    in_frame: Tensor  # (B, MAX_CHORD) which slots of `s.frame` hold a pitch
    rel: Tensor  # (B, 12) its pitch classes above the tonic
    chord: Tensor  # (B,) its chord id (`analysis.chord_table`), -1 for none
    final: Tensor  # (B,) whether it closes a cadence onto the tonic


class Masks:
    """The rules of one compiled loop, for one batch: built while the loop is traced, from the vocabulary,
    the loop's token tables (`params`) and the primers (which tell the mode each request asked for)."""

    def __init__(self, ops, vocab: Vocabulary, params: dict, primers: Tensor, primer_len: Tensor):
        self.ops = ops
        self.kinds, self.allowed, self.hold = params["kinds"], params["allowed"], params["hold"]
        self.tok_pitch, self.chords = params["pitch"], params["chords"]
        self.steps = params["steps"]  # each shift token's steps, 0 for other tokens
        self.pitch_ids = ops.arange(len(vocab), dtype="int32")
        self.is_end = self.pitch_ids == vocab.end
        self.is_phrase = self.pitch_ids == vocab.phrase
        self.is_close = self.kinds == 3
        self.is_pitch = self.tok_pitch >= 0
        # Each token's piano key (0 for tokens without a pitch).
        self.key_of_token = ops.clip(self.tok_pitch - PIANO_LOW, 0, PIANO_KEYS - 1)
        self.slots = ops.arange(MAX_CHORD, dtype="int32")
        self.twelve = ops.arange(12, dtype="int32")
        self.bit = ops.convert_to_tensor(np.array([1 << i for i in range(12)], np.int32))
        self.keys = ops.arange(PIANO_KEYS, dtype="int32") + PIANO_LOW
        # The network writes in C major or A minor, named by the mode token of the primer's head. A piece
        # ends in the one of the two its notes say (as `keys.estimate_key` hears it: a piece asked in
        # G major may spend itself in E minor); a primer without a mode has no end rules.
        valid = ops.arange(ops.shape(primers)[1], dtype="int32")[None, :] < primer_len[:, None]
        self.asked_minor = ops.any(valid & (primers == vocab.mode_id("minor")), axis=1)
        self.keyed = self.asked_minor | ops.any(valid & (primers == vocab.mode_id("major")), axis=1)
        self.prefer_minor = ops.convert_to_tensor(_MINOR_OVER_MAJOR)

    def _leads_home(self, chord: Tensor, tonic: Tensor) -> Tensor:
        """Whether a chord id is V, V7 or IV/iv of the tonic (analysis.leads_to)."""
        root, quality = chord // 3, chord % 3
        dominant = (root == (tonic + 7) % 12) & ((quality == 0) | (quality == 2))
        subdominant = (root == (tonic + 5) % 12) & (quality <= 1)
        return (chord >= 0) & (dominant | subdominant)

    def key(self, s, limits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(minor, tonic, each token's pitch class above the tonic or -1) of each request so far."""
        ops = self.ops
        # A minor where the Krumhansl-Schmuckler correlation says so better than C major (ties go to the
        # mode asked for).
        lean = ops.sum(s.hist * self.prefer_minor[None, :], axis=1)
        # Settled when the steering below begins, so the steps of the ending agree on one tonic.
        minor = ops.where(limits - s.events > 2, (lean > 0) | ((lean == 0) & self.asked_minor), s.minor)
        tonic = ops.where(minor, 9, 0)
        tok_pitch = self.tok_pitch
        tok_rel = ops.where(tok_pitch[None, :] >= 0, (tok_pitch[None, :] - tonic[:, None] + 120) % 12, -1)
        return minor, tonic, tok_rel

    def grammar(self, s, kind: Tensor) -> Tensor:
        """The tokens that may follow the previous one (of class `kind`), within the caps."""
        ops = self.ops
        ok = ops.take(self.allowed, s.tok, axis=0)
        next_kind = self.kinds[None, :]
        ok &= ~((next_kind == 2) & (s.chord[:, None] >= MAX_CHORD))
        ok &= ~((next_kind == 1) & (s.shifts[:, None] >= MAX_SHIFT_CHAIN) & (kind[:, None] == 1))
        # A frame holds only what sounds (a hold of a silent pitch would be dropped when decoding).
        heard = ops.take(s.sounding, self.key_of_token, axis=1)
        ok &= ~(self.hold[None, :] & ~heard)
        # Repetition guard: after MAX_RUN equal events the next one may not start on the same pitch.
        stuck = (s.run >= MAX_RUN) & (kind == 1)
        ok &= ~(stuck[:, None] & (self.pitch_ids[None, :] == s.prev_first[:, None]))
        # After MAX_QUIET frames without a new note, this frame must start one before it closes.
        ok &= ~((next_kind == 3) & ((s.quiet >= MAX_QUIET) & ~s.attacked)[:, None])
        # No shift takes the music past MAX_IDLE steps without a new note, except the shortest right after
        # a closing bar, where a shift must come (only a frame written in the primer can close past the
        # cap); a frame at the cap must start a note before it closes.
        too_long = (s.idle[:, None] + self.steps[None, :] > MAX_IDLE) & (
            (self.steps[None, :] > 1) | (kind[:, None] == 1)
        )
        ok &= ~((next_kind == 1) & too_long)
        ok &= ~((next_kind == 3) & ((s.idle >= MAX_IDLE) & ~s.attacked)[:, None])
        return ok

    def on_grid(self, ok: Tensor, s, grids: Tensor) -> Tensor:
        """`ok` with only the shifts that keep the frames on the seed's grid (eighths or sixteenths of its
        beats, counted by `s.clock`), where such a shift is allowed at all: a steer, so a cap that leaves
        only an off-grid shift still has one, and the next shift brings the music back."""
        ops = self.ops
        lands = (s.clock[:, None] + self.steps[None, :]) % ops.maximum(grids, 1)[:, None] == 0
        wanted = (self.kinds[None, :] != 1) | lands | (grids == 0)[:, None]
        return _prefer(ops, ok, wanted)

    def shifts_within(self, ok: Tensor, left: Tensor) -> Tensor:
        """`ok` with only the shifts that move time on by at most `left` steps, where one is allowed at all
        (a steer, as `on_grid` is)."""
        fits = (self.kinds[None, :] != 1) | (self.steps[None, :] <= left[:, None])
        return _prefer(self.ops, ok, fits)

    def frame(self, s, tonic: Tensor, minor: Tensor) -> Frame:
        """The frame so far: its pitch classes, its chord, and whether it closes a cadence."""
        ops = self.ops
        in_frame = self.slots[None, :] < s.chord[:, None]
        pcs = ops.any(in_frame[:, :, None] & ((s.frame % 12)[:, :, None] == self.twelve), axis=1)
        rel = ops.take_along_axis(pcs, (self.twelve[None, :] + tonic[:, None]) % 12, axis=1)
        bass = s.frame[:, 0] % 12
        code = ops.sum(ops.where(pcs, self.bit[None, :], 0), axis=1) * 12 + bass
        chord = ops.where(s.chord > 0, ops.take(self.chords, code), -1)
        # A root-position tonic triad (major; major or minor in a minor key) with nothing else,
        # reached from V or IV: the cadence `stats.cadences` hears at the end of a piece.
        tonic_chord = (chord == tonic * 3) | (minor & (chord == tonic * 3 + 1))
        extra = rel & ~ops.take(ops.convert_to_tensor(_TRIADS), ops.where(chord % 3 == 1, 1, 0), axis=0)
        lead = ops.where(chord == s.harm, s.before, s.harm)
        final = self.keyed & s.attacked & tonic_chord & (bass == tonic) & ~ops.any(extra, axis=1)
        final &= self._leads_home(lead, tonic)
        return Frame(in_frame, rel, chord, final)

    def ending(
        self, ok: Tensor, s, kind: Tensor, lengths: Tensor, limits: Tensor, final: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`ok` without the endings not allowed yet, and with only the end once it is due; and the onsets
        each request may still add, this frame's included."""
        ops = self.ops
        is_end = self.is_end
        # Not before `length` onsets; once `limits` are written, the next shift is the last.
        ok &= ~(is_end[None, :] & (s.events < lengths)[:, None])
        # Past `length`, the model closes the piece with <end> or a phrase end (a fermata, which
        # closes every chorale); in a known key only on a cadence onto the tonic.
        past = s.events + ops.cast(s.attacked, "int32") >= lengths
        ok &= ~(self.is_phrase[None, :] & (self.keyed & past & ~final)[:, None])
        ok &= ~(is_end[None, :] & (self.keyed & ~s.cad_ok & (s.events < limits))[:, None])
        left = limits - s.events
        must_end = (s.events >= limits) | ((s.events >= lengths) & (s.cadence | (s.cad_ok & (left <= 2))))
        ok &= ~(must_end & (kind == 1))[:, None] | is_end[None, :]
        return ok, left

    def steer_cadence(
        self, ok: Tensor, s, left: Tensor, tonic: Tensor, minor: Tensor, tok_rel: Tensor, rel: Tensor
    ) -> Tensor:
        """As the margin runs out, the last two onsets steered into V(7)-I (or just I after V or IV): the
        bass of the tonic chord on the tonic, only chord tones, closing once root and third sound."""
        ops = self.ops
        keyed = self.keyed
        home = keyed & ((left <= 1) | ((left == 2) & self._leads_home(s.harm, tonic)))
        to_v = keyed & (left == 2) & ~self._leads_home(s.harm, tonic)
        first = (s.chord == 0)[:, None]
        third = rel[:, 4] | (minor & rel[:, 3])
        thirds = (tok_rel == 4) | ((tok_rel == 3) & minor[:, None])
        tonic_tones = ops.where(
            first,
            tok_rel == 0,
            (tok_rel == 0)
            | (tok_rel == 7)
            | ((tok_rel == 4) & ~rel[:, 3:4])
            | ((tok_rel == 3) & (minor & ~rel[:, 4])[:, None]),
        )
        dominant_tones = (tok_rel == 7) | (tok_rel == 11) | (tok_rel == 2) | (tok_rel == 5)
        # With the frame nearly as full as the last onset and the chord still not spelt, the next
        # pitch must bring what is missing (else the network climbs the keyboard to avoid it).
        full = (s.chord >= ops.maximum(2, s.last_n - 2))[:, None]
        tonic_tones = ops.where(full & ~third[:, None], tonic_tones & thirds, tonic_tones)
        missing = ((tok_rel == 7) & ~rel[:, 7:8]) | ((tok_rel == 11) & ~rel[:, 11:12])
        dominant_tones = ops.where(full & ~(rel[:, 7:8] & rel[:, 11:12]), missing, dominant_tones)
        tonic_done = s.attacked & third
        dominant_done = s.attacked & rel[:, 7] & rel[:, 11]
        free = (self.kinds[None, :] == 1) | self.is_end[None, :]
        is_close = self.is_close[None, :]
        steer = ops.where(
            home[:, None],
            free | tonic_tones | (is_close & tonic_done[:, None]),
            ops.where(to_v[:, None], free | dominant_tones | (is_close & dominant_done[:, None]), True),
        )
        return _prefer(ops, ok, steer)

    def phrase_end(self, ok: Tensor, closing: Tensor) -> Tensor:
        """`ok` with a frame that closes a phrase (`closing`) closed by a fermata, not a plain closing bar."""
        plain = self.is_close[None, :] & ~self.is_phrase[None, :]
        return _prefer(self.ops, ok, ~(plain & closing[:, None]))

    def voice_leading(self, ok: Tensor, s, in_frame: Tensor, scaled: Tensor) -> tuple[Tensor, Tensor]:
        """`ok` without the pitches (attacked, or held while the voices under it moved) that form parallel
        fifths or octaves with a lower voice of this frame, and `scaled` (the logits over temperature)
        with their probability handed to the other pitches.

        Voices are counted from the bass of the last onset (`stats.parallel_perfects_per_change` compares
        onsets that sound as many pitches, so only a frame as full as the last one counts).
        """
        ops = self.ops
        is_pitch = self.is_pitch
        k = s.chord
        upper_was = ops.take_along_axis(s.last, ops.minimum(k, MAX_CHORD - 1)[:, None], axis=1)  # (B, 1)
        lower = in_frame & (k < s.last_n)[:, None]
        was = (upper_was - s.last + 120) % 12
        perfect = lower & ((was == 0) | (was == 7))
        moved = s.frame - s.last  # (B, C) how each lower voice moved
        cand = self.keys[None, None, :]  # per piano key, then per token (attacks and holds alike)
        now = (cand - s.frame[:, :, None] + 120) % 12
        parallel = (
            perfect[:, :, None]
            & (now == was[:, :, None])
            & ((cand - upper_was[:, :, None]) * moved[:, :, None] > 0)
            & ((cand % 12) != (upper_was % 12)[:, :, None])
        )
        parallel = ops.take(ops.any(parallel, axis=1), self.key_of_token, axis=1) & is_pitch[None, :]
        kept = _prefer(ops, ok, ~parallel)
        # What the left-out pitches would have had goes to the other pitches, not to the closing bar:
        # the voice moves elsewhere instead of the chord losing it.
        before_p = ops.softmax(ops.where(ok, scaled, -1e9), axis=-1)
        lost = ops.sum(ops.where(ok & ~kept, before_p, 0.0), axis=1)
        other = ops.sum(ops.where(kept & is_pitch[None, :], before_p, 0.0), axis=1)
        boost = ops.log((other + lost) / ops.maximum(other, 1e-30))
        scaled += ops.where(is_pitch[None, :] & (other > 0)[:, None], boost[:, None], 0.0)
        return kept, scaled


def _prefer(ops, ok: Tensor, wanted: Tensor) -> Tensor:
    """`ok` narrowed to `wanted` where that leaves a request some token, else `ok` as it was: a steer,
    never a dead end."""
    narrowed = ok & wanted
    return ops.where(ops.any(narrowed, axis=1, keepdims=True), narrowed, ok)


def token_kinds(v: Vocabulary) -> np.ndarray:
    """Each token's class as the loop's grammar counts it: 0 special, 1 shift, 2 pitch, 3 duration."""
    kinds = np.zeros(len(v), np.int32)
    for t in range(len(v)):
        kinds[t] = 1 if v.is_shift(t) else 2 if v.is_pitch(t) else 3 if v.is_duration(t) else 0
    return kinds


def token_pitches(v: Vocabulary) -> np.ndarray:
    """The MIDI pitch of each attack and hold token, -1 for every other token."""
    out = np.full(len(v), -1, np.int32)
    for t in range(len(v)):
        if v.is_attack(t):
            out[t] = PIANO_LOW + t - v.pitch_base
        elif v.is_hold(t):
            out[t] = PIANO_LOW + t - v.hold_base
    return out


# Krumhansl-Schmuckler: a pitch-class histogram leans to A minor over C major by this dot product.
_MINOR_OVER_MAJOR = (key_profile(Key(9, "minor")) - key_profile(Key(0, "major"))).astype(np.float32)
# Pitch classes above the tonic of a major (row 0) and a minor (row 1) tonic triad.
_TRIADS = np.array([[pc in (0, 4, 7) for pc in range(12)], [pc in (0, 3, 7) for pc in range(12)]])
