"""Form: the plan that brings phrases back and closes long phrases on a cadence (`bot.model.form`), its
pieces run eagerly, and an unseeded piece of the shipped model in which the first phrase comes back."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bot.model import backend
from bot.model import form as F
from bot.music.events import GRID

pytestmark = pytest.mark.timeout(300)
V = 10


def state(out: list[int], t: int, **fields) -> SimpleNamespace:
    """The loop's fields the plan reads, for one row."""
    ops = backend.keras().ops
    row = {"ptr": -1, "returned": 0, "ph_prev": -1, "ph_start": 0, "phrases": 0, "ph_steps": 0, "bar_pos": 0}
    row.update(bar_no=0, bars=4 * GRID)
    waiting = fields.pop("waiting", False)
    row.update(fields)
    s = {k: ops.convert_to_tensor(np.array([v], np.int32)) for k, v in row.items()}
    s["waiting"] = ops.convert_to_tensor(np.array([waiting]))
    buffer = np.zeros((1, 32), np.int32)
    buffer[0, : len(out)] = out
    return SimpleNamespace(out=ops.convert_to_tensor(buffer), t=ops.convert_to_tensor(t, "int32"), **s)


def step(s, nxt: int, phrase_end: bool, u: float = 0.0, form: int = F.FERMATAS, moved: int = 0) -> dict:
    ops = backend.keras().ops
    plans = np.full((1, F.PLAN_PHRASES), u, np.float32)
    form_ = F.Form(ops)
    result = form_.step(
        s,
        ops.convert_to_tensor(np.array([nxt], np.int32)),
        form_.copied(s.out, s.ptr),
        ops.convert_to_tensor(np.array([moved > 0])),
        ops.convert_to_tensor(np.array([moved], np.int32)),
        ops.convert_to_tensor(np.array([False])),
        ops.convert_to_tensor(np.array([phrase_end])),
        ops.convert_to_tensor(np.array([form], np.int32)),
        ops.convert_to_tensor(plans),
    )
    return {k: int(np.asarray(v)[0]) for k, v in result.items()}


def test_the_chances_follow_bar_form():
    phrases = np.array([1, 2, 3, 3, 4, 5, 5])
    returned = np.array([0, 0, 0, 1, 0, 1, 2])
    expected = [0.0, F.FIRST, F.LATER, F.FOLLOW, F.LATER, F.FOLLOW, 0.0]
    assert F.chance(phrases, returned).tolist() == pytest.approx(expected)


def test_the_copied_token_gets_the_weight_and_other_rows_keep_their_logits():
    ops = backend.keras().ops
    logits = np.log(np.full((2, V), 1.0 / V, np.float32))
    out = np.array([[0, 3, 4, 5, 0, 0], [0, 3, 4, 5, 0, 0]], np.int32)
    form, ptr = F.Form(ops), ops.convert_to_tensor(np.array([2, -1], np.int32))
    copied = form.copied(ops.convert_to_tensor(out), ptr)
    assert np.asarray(copied)[0] == 4
    ones = ops.convert_to_tensor(np.ones(2, np.float32))
    mixed = np.asarray(form.mix(ops.convert_to_tensor(logits), copied, ptr, ones))
    p = np.exp(mixed)
    assert p[0, 4] == pytest.approx(F.WEIGHT + (1 - F.WEIGHT) / V, rel=1e-5)
    assert p[0].sum() == pytest.approx(1.0, rel=1e-5)
    assert np.array_equal(mixed[1], logits[1])
    # At another temperature the sampler's division gives back the same mixture: the copy is not tempered.
    hot = np.asarray(form.mix(ops.convert_to_tensor(logits), copied, ptr, ones * 1.5))
    assert np.exp(hot[0] / 1.5) == pytest.approx(p[0], rel=1e-5)
    assert np.array_equal(hot[1], logits[1])


def test_a_return_starts_at_a_phrase_end_follows_the_copy_and_ends_where_the_draw_leaves_it():
    # Tokens 1-9 are shifts, the rest pitches and closes: phrase one's first pitch is at 2, phrase two's
    # at 7; the token at 9 closes phrase two.
    s = state([0, 1, 13, 14, 15, 19, 1, 16, 17, 19], t=8, ph_prev=2, ph_start=7, phrases=1)
    new = step(s, 19, phrase_end=True, u=F.FIRST - 0.01)
    assert new == {
        "ptr": 2,
        "waiting": 1,
        "returned": 1,
        "ph_prev": 7,
        "ph_start": -1,
        "phrases": 2,
        "ph_steps": 0,
    }
    # The draw above the chance: no return; the phrases still move on.
    assert step(s, 19, phrase_end=True, u=F.FIRST + 0.01)["ptr"] == -1
    # A request without a plan never returns.
    assert step(s, 19, phrase_end=True, u=0.0, form=0)["ptr"] == -1
    # The shifts after the fermata are the network's: the copy waits at the first pitch...
    after = state(
        [0, 1, 13, 14, 15, 19, 1, 16, 17, 19],
        t=9,
        ptr=2,
        waiting=True,
        returned=1,
        ph_prev=7,
        ph_start=-1,
        phrases=2,
    )
    waited = step(after, 3, phrase_end=False, moved=6)
    assert (waited["ptr"], waited["waiting"], waited["ph_start"]) == (2, 0 + 1, -1)
    # ...and then the copied pitch moves it on and begins the phrase; any other token ends it.
    copying = step(after, 13, phrase_end=False)
    assert (copying["ptr"], copying["waiting"], copying["ph_start"]) == (3, 0, 10)
    assert step(after, 16, phrase_end=False)["ptr"] == -1
    going = state(
        [0, 1, 13, 14, 15, 19, 1, 16, 17, 19, 1, 13],
        t=11,
        ptr=3,
        returned=1,
        ph_prev=7,
        ph_start=11,
        phrases=2,
    )
    assert step(going, 14, phrase_end=False)["ptr"] == 4
    assert step(going, 15, phrase_end=False)["ptr"] == -1
    # Two returns in a row are the most: the third phrase end starts none.
    assert step(state([0] * 12, t=11, returned=2, ph_prev=5, ph_start=9, phrases=3), 19, True)["ptr"] == -1


def test_a_long_phrase_is_due_its_cadence_on_a_beat_only():
    ops = backend.keras().ops
    form = ops.convert_to_tensor(np.array([F.FERMATAS], np.int32))
    due = lambda **f: bool(np.asarray(F.Form(ops).due(state([0], 0, **f), form))[0])  # noqa: E731
    assert due(ph_steps=F.PHRASE_BEATS * GRID, bar_pos=GRID)
    assert not due(ph_steps=F.PHRASE_BEATS * GRID, bar_pos=GRID // 2)
    assert not due(ph_steps=F.PHRASE_BEATS * GRID - 1, bar_pos=0)


def test_a_tunes_phrases_end_on_the_downbeat_of_every_group_of_bars():
    """A `BARS` plan ends a phrase at the shift that lands on the downbeat beginning a group of
    `PHRASE_BARS` bars; a shift past it ends none, a fermata ends none, and a tune is never due a
    cadence. A `FERMATAS` plan ends them at its fermatas."""
    ops = backend.keras().ops
    bar = 4 * GRID

    def ends(form, bar_no, bar_pos, moved, fermata=False, in_primer=False) -> bool:
        s = state([0], 0, bar_no=bar_no, bar_pos=bar_pos)
        t = lambda x, kind="int32": ops.convert_to_tensor(np.array([x], kind))  # noqa: E731
        form_ = F.Form(ops)
        bar_no = form_.bars_after(s, t(moved))
        return bool(
            np.asarray(form_.phrase_end(s, t(moved), t(fermata, bool), t(form), t(in_primer, bool), bar_no))[
                0
            ]
        )

    last_beat = bar - GRID
    group = F.PHRASE_BARS - 1  # the bars begun before the last bar of the first group
    assert ends(F.BARS, group, last_beat, GRID)
    assert not ends(F.BARS, group, last_beat, GRID + GRID // 2)  # past the downbeat: no return off the beat
    assert not ends(F.BARS, group - 1, last_beat, GRID) or F.PHRASE_BARS == 1  # a downbeat inside the group
    assert not ends(F.BARS, group, last_beat, GRID // 2)
    assert not ends(F.BARS, group, last_beat, 0, fermata=True)
    assert not ends(F.BARS, group, last_beat, GRID, in_primer=True)
    assert ends(F.FERMATAS, 0, 5, 0, fermata=True) and not ends(F.FERMATAS, group, last_beat, GRID)
    # Passing a downbeat counts a bar whatever the plan.
    s = state([0], 0, bar_no=3, bar_pos=last_beat)
    assert (
        int(np.asarray(F.Form(ops).bars_after(s, ops.convert_to_tensor(np.array([2 * bar], np.int32))))[0])
        == 5
    )
    tune = ops.convert_to_tensor(np.array([F.BARS], np.int32))
    # No shift of a tune may pass the next group's downbeat; other plans' shifts are free.
    left = F.Form(ops).steps_to_group(state([0], 0, bar_no=F.PHRASE_BARS - 1, bar_pos=GRID), tune)
    assert int(np.asarray(left)[0]) == bar - GRID
    chorale = ops.convert_to_tensor(np.array([F.FERMATAS], np.int32))
    assert int(np.asarray(F.Form(ops).steps_to_group(state([0], 0), chorale))[0]) > 1000 * bar
    assert not bool(np.asarray(F.Form(ops).due(state([0], 0, ph_steps=99 * GRID), tune))[0])


def test_the_plans_numbers_come_from_the_rng_seed_alone():
    a = F.plan_uniforms([7, 8])
    assert np.array_equal(a[0], F.plan_uniforms([7])[0]) and not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], np.random.default_rng(7).random(F.PLAN_PHRASES, dtype=np.float32))


@pytest.fixture(scope="module")
def shipped():
    from bot.model.composer import Composer

    return Composer()


def phrase_starts(vocab, tokens: list[int]) -> list[int]:
    """Where each phrase begins in a stream of new tokens: its first pitch, the first after every fermata."""
    ends = [-1] + [i for i, t in enumerate(tokens) if t == vocab.phrase]
    return [next(j for j in range(e + 1, len(tokens)) if not vocab.is_shift(tokens[j])) for e in ends[:-1]]


def test_the_first_phrase_comes_back_after_the_second(shipped):
    from bot.model.sample import Request
    from bot.model.styles import default_style
    from bot.music.phrases import passage_returns

    vocab = shipped.vocab
    # An RNG seed whose plan draws a return at the second phrase end, and one whose plan does not.
    seeds = [s for s in range(40) if F.plan_uniforms([s])[0, 2] < F.FIRST - 0.05]
    kept = [s for s in range(40) if F.plan_uniforms([s])[0, 2] > F.FIRST + 0.05]
    head = tuple(vocab.head("major", default_style(shipped.model)))
    returned, form_off = [], []
    for seed in seeds[:3]:
        tokens = shipped.sampler.sample([Request(head, 120, rng_seed=seed, form=True)])[0]
        starts = phrase_starts(vocab, tokens)
        assert len(starts) > 3
        first, third = tokens[starts[0] : starts[1]], tokens[starts[2] : starts[3]]
        # The third phrase copies the first: the same tokens, at least until the copy was left.
        shared = next(
            (i for i, (a, b) in enumerate(zip(first, third)) if a != b), min(len(first), len(third))
        )
        returned.append(shared / len(first))
        form_off.append(shipped.sampler.sample([Request(head, 120, rng_seed=seed, form=False)])[0])
    assert max(returned) == 1.0 and np.mean(returned) > 0.5
    events = vocab.decode(
        shipped.sampler.sample([Request(head, 120, rng_seed=seeds[int(np.argmax(returned))], form=True)])[0]
    )
    assert passage_returns(events)
    # Without the plan, or when its draw says no, the third phrase is new.
    for tokens in form_off + shipped.sampler.sample(
        [Request(head, 120, rng_seed=s, form=True) for s in kept[:2]]
    ):
        starts = phrase_starts(vocab, tokens)
        if len(starts) > 3:
            assert tokens[starts[2] : starts[3]] != tokens[starts[0] : starts[1]]


def test_a_tunes_first_bars_come_back_after_its_next_ones(shipped):
    """The folk network's unseeded tunes follow the `BARS` plan: where the plan draws a return at the
    second phrase end, the bars after it copy the tune's first bars from their downbeat on, at least
    until the copy was left; without the plan the network rarely writes them again."""
    from bot.model.sample import Request
    from bot.music.phrases import passage_returns

    folk = shipped.writer("folk")
    vocab = folk.vocab
    head = tuple(vocab.head("major", "folk"))
    group = F.PHRASE_BARS * 4  # beats in a phrase of a tune in 4/4
    seeds = [s for s in range(40) if F.plan_uniforms([s])[0, 2] < F.FIRST - 0.05][:3]

    def shared(events) -> float:
        """How much of the tune's first group of bars the third copies, from its downbeat on."""
        first = [(e.onset, e.pitches) for e in events if e.onset < group]
        third = [(e.onset - 2 * group, e.pitches) for e in events if 2 * group <= e.onset < 3 * group]
        same = next((i for i, (a, b) in enumerate(zip(first, third)) if a != b), min(len(first), len(third)))
        return same / max(1, len(first))

    planned, plain = [], []
    for seed in seeds:
        events = vocab.decode(folk.sampler.sample([Request(head, 100, rng_seed=seed, form=F.BARS)])[0])
        planned.append(shared(events))
        assert any(e.onset == 2 * group for e in events)  # the third group begins on its downbeat
        plain.append(shared(vocab.decode(folk.sampler.sample([Request(head, 100, rng_seed=seed)])[0])))
    assert max(planned) == 1.0 and np.mean(planned) > 0.5
    assert np.mean(plain) < 0.5 * np.mean(planned)
    assert passage_returns(events)
