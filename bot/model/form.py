"""Form: phrases that come back. A plan the sampling loop follows for a piece written from nothing.

The network writes phrase after phrase, each closed on a cadence (a fermata), and on its own never brings
one back: its memory is its LSTM state, and a return is exactly what it would not write afresh. The
chorales it learnt from are mostly in bar form (A A B): the first two phrases (the Stollen) are sung again
to new words before the rest (the Abgesang), and the tune of an earlier phrase comes back in about a third
of them. So at each phrase end the plan may make the next phrase a return of the one two phrases back:

- after the second phrase, the first comes back with chance `FIRST`; after that return, the second comes
  back with chance `FOLLOW` (A B A B, the Stollen repeated);
- after any later phrase, the one two back returns with chance `LATER`, never three phrases in a row.

A return copies the earlier phrase's tokens one by one: the copied token gets weight `WEIGHT` in a linear
mixture with the network, p = (1 - w) p_network + w [token = copied], before the grammar, the grid, the
voice-leading and the ending rules, which still decide what may come. The copy ends where the copied
phrase closed (its fermata ends the return) or at the first token drawn otherwise (a varied return: the
network goes on from there), so a return can never outrun the rules or run into a loop. The chances are
drawn from the request's own RNG seed (`plan_uniforms`), one number per phrase end.

The constants were chosen on unseeded samples of 500 notes drawn with RNG seeds 9000-9047 beside 35
training chorales (not the samples or the chorales `etude eval --listener` reports). Of those samples a
passage of 8 onsets came back within 64 beats in 0% without the plan, 75% with the returns alone; with
the cadences after 8, 10 and 12 beats, 1.60, 1.60 and 1.38 phrase cadences per 16 beats (the training
chorales 1.49, without the plan 1.09), and a classifier told their excerpts from the chorales' 82%, 82%
and 77% of the time (81% without the plan): the returns and cadences are no longer what tells them.

A folk tune has no fermatas and closes its phrases on one line, so its plan (`BARS`) counts phrases in
bars: a phrase is `PHRASE_BARS` bars from downbeat to downbeat, no shift may pass the downbeat that
begins the next group (a note is struck or held again there), and the same chances bring back the
phrase two before, so a tune's strain comes back as its halves do (a b a b). Chosen on 16 unseeded folk
tunes of 200 notes (RNG seeds 9000-9015) beside 30 of Ryan's Mammoth tunes no run reads (every seventh
from the second; not the tunes `etude eval` reports): the share of bars that repeat an earlier bar note
for note went from 0 to 0.26 (the tunes: 0.26), a passage of 8 onsets came back within 64 beats in 69%
of them (0% without the plan; the tunes 97%), and the classifier told their excerpts from the tunes'
78% of the time (79% without). Phrases of 4 bars brought back less (50%) and were told more (85%);
higher chances (`FIRST` 0.8 or `LATER` 0.4) repeated more bars than the tunes do (0.29-0.38).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bot.music.events import GRID

# What a request's plan takes for a phrase end (`Request.form`; 0: no plan).
FERMATAS = 1  # music in parts: a phrase closes on a V-I cadence and a fermata, a long one steered to it
BARS = 2  # a tune: a phrase is `PHRASE_BARS` bars from downbeat to downbeat, closed as the network likes
# The plan each style's unseeded pieces follow. A folk tune is one line, which the chord cadences would
# turn into parts (a tune steered to its first cadence went on in chords), and its phrases carry no
# fermatas: they are counted in bars, the way a tune's strains are.
PLANNED_STYLES = {"chorale": FERMATAS, "renaissance": FERMATAS, "classical": FERMATAS, "folk": BARS}
PHRASE_BARS = 2
WEIGHT = 0.95  # the copied token's weight in the mixture while a phrase returns
FIRST = 0.5  # chance that the first phrase returns after the second (bar form's Stollen)
FOLLOW = 0.9  # chance that, the first having returned, the second follows it
LATER = 0.2  # chance that a later phrase brings back the one two before it
# A phrase that has run this many beats is steered to a cadence on its next frames on a beat (V, then I
# closed by a fermata), as the end of a piece is; the network closes most phrases sooner by itself.
PHRASE_BEATS = 12
MAX_IN_ROW = 2  # returns in a row at most: the piece must go on to new material
PLAN_PHRASES = 64  # phrase ends a plan draws for; later ones reuse the last number

Tensor = Any  # a tensor of the backend in use


def plan_uniforms(seeds: list[int]) -> np.ndarray:
    """(len(seeds), PLAN_PHRASES) float32 uniforms: the numbers each request's plan draws at its phrase
    ends, from its RNG seed alone, apart from the numbers that draw its tokens."""
    return np.stack(
        [np.random.default_rng([seed, 1]).random(PLAN_PHRASES, dtype=np.float32) for seed in seeds]
    )


def chance(phrases: np.ndarray | Tensor, returned: np.ndarray | Tensor, where: Any = np.where):
    """The chance that the phrase after the `phrases`-th phrase end returns the one two before it, given
    how many phrases in a row have been returns (`returned`)."""
    return where(
        returned >= MAX_IN_ROW,
        0.0,
        where(returned == 1, FOLLOW, where(phrases == 2, FIRST, where(phrases > 2, LATER, 0.0))),
    )


class Form:
    """The plan inside the compiled loop: the copy's mixture, and the state a token moves on."""

    def __init__(self, ops):
        self.ops = ops

    def copied(self, out: Tensor, ptr: Tensor) -> Tensor:
        """The token each row's returning phrase copies next (`out[ptr]`; meaningless where ptr < 0)."""
        return self.ops.take_along_axis(out, self.ops.maximum(ptr, 0)[:, None], axis=1)[:, 0]

    def mix(self, logits: Tensor, copied: Tensor, ptr: Tensor, temperature: Tensor) -> Tensor:
        """Logits with the copied token mixed in where a phrase returns (ptr >= 0). The mixture is not
        tempered: its log is scaled by the request's `temperature`, which the sampler divides by, so a
        copy is as likely at any temperature (at 1 nothing changes)."""
        ops = self.ops
        onehot = ops.one_hot(copied, ops.shape(logits)[1], dtype="float32")
        p = (1.0 - WEIGHT) * ops.softmax(logits, axis=-1) + WEIGHT * onehot
        mixed = ops.log(ops.maximum(p, 1e-30)) * temperature[:, None]
        return ops.where((ptr >= 0)[:, None], mixed, logits)

    def due(self, s, forms: Tensor) -> Tensor:
        """Whether the frame being written, on a beat, should bring the phrase to its cadence: it has run
        `PHRASE_BEATS` beats."""
        return (forms == FERMATAS) & (s.ph_steps >= PHRASE_BEATS * GRID) & (s.bar_pos % GRID == 0)

    def steps_to_group(self, s, forms: Tensor) -> Tensor:
        """Steps from the time reached to the downbeat that begins the next group of `PHRASE_BARS` bars,
        for the rows of a `BARS` plan (more than any shift for the rest): no shift passes it, so every
        phrase of a tune begins on it and can come back whole."""
        ops = self.ops
        left = (PHRASE_BARS - ops.mod(s.bar_no, PHRASE_BARS)) * s.bars - s.bar_pos
        return ops.where(forms == BARS, left, 1 << 30)

    def bars_after(self, s, moved: Tensor) -> Tensor:
        """The bars begun since the stream's start once the token moves time on by `moved` steps."""
        return s.bar_no + self.ops.floor_divide(s.bar_pos + moved, s.bars)

    def phrase_end(
        self, s, moved: Tensor, fermata: Tensor, forms: Tensor, in_primer: Tensor, bar_no: Tensor
    ) -> Tensor:
        """Where a phrase ends after the primer: for a `BARS` plan, at the shift that lands on the downbeat
        of a new group of `PHRASE_BARS` bars (one that moves past it ends none, so a return never starts
        off the beat); otherwise at a `fermata`, the closing token of a phrase's last frame. `bar_no` is
        `bars_after(s, moved)`, which the loop counts once a step."""
        ops = self.ops
        lands = (moved > 0) & (ops.mod(s.bar_pos + moved, s.bars) == 0) & (ops.mod(bar_no, PHRASE_BARS) == 0)
        return ops.where(forms == BARS, lands & ~in_primer, fermata)

    def step(
        self,
        s,
        nxt: Tensor,
        copied: Tensor,
        shift: Tensor,
        moved: Tensor,
        in_primer: Tensor,
        phrase_end: Tensor,
        forms,
        plans,
    ) -> dict:
        """The plan's state after `nxt` is written at s.t + 1; `copied` is the token the step offered
        (`copied()`, read once a step), `shift` marks a shift token, `moved` the steps it moves time on,
        `phrase_end` a token that closes a phrase after the primer (`phrase_end()`), `forms` each request's
        plan (0: none), `plans` their uniforms.

        A phrase begins at its first frame's first pitch, not at the shift before it: the time after a
        fermata stays the network's, and the return starts with the first pitch it writes there.
        """
        ops = self.ops
        # Waiting for the first pitch, a shift keeps the copy where it is; otherwise the copied token moves
        # it on and any other token ends it.
        ptr = ops.where(
            s.ptr < 0, -1, ops.where(s.waiting & shift, s.ptr, ops.where(nxt == copied, s.ptr + 1, -1))
        )
        phrases = s.phrases + ops.cast(phrase_end, "int32")
        u = ops.take_along_axis(plans, ops.minimum(phrases, PLAN_PHRASES - 1)[:, None], axis=1)[:, 0]
        p = chance(phrases, s.returned, ops.where)
        returns = phrase_end & (forms > 0) & (s.ph_prev >= 0) & (u < p)
        begins = (s.ph_start < 0) & ~shift & ~in_primer  # the phrase's first pitch
        return {
            "ptr": ops.where(phrase_end, ops.where(returns, s.ph_prev, -1), ptr),
            "waiting": ops.where(phrase_end, returns, s.waiting & shift),
            "returned": ops.where(phrase_end, ops.where(returns, s.returned + 1, 0), s.returned),
            "ph_prev": ops.where(phrase_end, s.ph_start, s.ph_prev),
            "ph_start": ops.where(phrase_end, -1, ops.where(begins, s.t + 1, s.ph_start)),
            "phrases": phrases,
            "ph_steps": ops.where(phrase_end, 0, s.ph_steps + moved),
        }
