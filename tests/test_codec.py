"""Every option through every channel it travels: button ids, the job record, CLI flags, slash parameters.

The property test draws options over each one's whole range (edges, tiny steps above an open edge, huge,
fractional) and holds each channel to give back exactly the checked options it was given.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest
from discord import app_commands
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import codec
from bot.chat import buttons
from bot.chat.params import slash_options
from bot.cli import build_parser
from bot.cli.compose import options_from_args
from bot.errors import BadOption
from bot.options import CHOICES, FLAGS, KEYS, MAX_LENGTH, SPECS, STYLES, Options, number_text


def _number(name: str) -> st.SearchStrategy:
    spec = SPECS[name]
    if spec.kind is int:
        values = st.integers(spec.lo, spec.hi)
    else:
        tiny = [spec.lo + d for d in (1e-12, 1e-9, 1e-5, 0.00004, 0.00005, 0.00006)]
        values = st.one_of(
            st.floats(spec.lo, spec.hi, exclude_min=spec.lo_open, allow_nan=False),
            st.sampled_from([v for v in (*tiny, spec.hi, spec.hi - 1e-9, spec.hi - 0.004) if v <= spec.hi]),
        )
        if not spec.lo_open:
            values = st.one_of(values, st.just(float(spec.lo)))
    return st.none() | values if spec.default is None else values


def _field(name: str) -> st.SearchStrategy:
    if name in SPECS:
        return _number(name)
    if name in CHOICES:
        choices = st.sampled_from(CHOICES[name])
        return choices if getattr(Options(), name) is not None else st.none() | choices
    if name in FLAGS:
        return st.booleans()
    return st.integers(0, 127)  # the instrument


OPTIONS = st.builds(lambda **kw: Options(**kw).check(), **{f.name: _field(f.name) for f in fields(Options)})


def test_every_option_has_a_tag_and_a_kind():
    for f in fields(Options):
        assert f.name in codec.TAGS, f"{f.name} travels in no button id: give it a tag in bot/codec.py"
        kinds = (f.name in SPECS) + (f.name in CHOICES) + (f.name in FLAGS) + (f.name == "instrument")
        assert kinds == 1, f.name
    assert len(set(codec.TAGS.values())) == len(codec.TAGS) and "s" not in codec.TAGS.values()


@settings(max_examples=300, deadline=None)
@given(OPTIONS, st.sampled_from(["reroll", "continue", "harmonize"]))
def test_button_ids_round_trip(options, action):
    cid = buttons.button_id(action, options, "0123456789abcdef")
    assert len(cid) <= 100 and "e-" not in cid and "e+" not in cid
    press = buttons.parse(cid)
    assert (press.action, press.file_key) == (action, "0123456789abcdef")
    assert press.options == replace(options, rng_seed=None)  # a re-roll draws its own RNG seed


@settings(max_examples=300, deadline=None)
@given(OPTIONS)
def test_job_records_round_trip(options):
    assert codec.from_record(json.loads(json.dumps(codec.record(options)))) == options


def _argv(options: Options) -> list[str]:
    argv = ["compose", "--instrument", str(options.instrument)]
    for name in SPECS:
        value = getattr(options, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", number_text(value, SPECS[name].decimals)]
    for name in CHOICES:
        if getattr(options, name):
            argv += [f"--{name}", getattr(options, name)]
    argv += [f"--{flag.replace('_', '-')}" for flag in FLAGS if getattr(options, flag)]
    return argv


@settings(max_examples=200, deadline=None)
@given(OPTIONS)
def test_cli_flags_round_trip(options):
    assert options_from_args(build_parser().parse_args(_argv(options))) == options


@settings(max_examples=200, deadline=None)
@given(OPTIONS)
def test_slash_parameters_round_trip(options):
    params = {f.name: getattr(options, f.name) for f in fields(Options) if f.name != "include_seed"}
    params["instrument"] = app_commands.Choice(name="x", value=options.instrument)
    for name in CHOICES:
        if getattr(options, name):
            params[name] = app_commands.Choice(name=getattr(options, name), value=getattr(options, name))
    assert slash_options(MAX_LENGTH, **params) == replace(options, include_seed=False)


def test_a_tiny_top_p_is_a_piece_not_a_crash():
    """`/compose top_p:0.00001` once made a button id with `1e-05`, which its own pattern refused."""
    options = Options(length=50, top_p=1e-05, tempo=20.5, video=True).check()
    assert options.top_p == 0.0001  # four decimals; below that, the likeliest choice alone, as here
    cid = buttons.button_id("reroll", options, None)
    assert cid == "etude:reroll:l50:p0.0001:b20.5:v1"
    assert buttons.parse(cid).options == options  # the video and the fractional tempo come back too


def test_the_longest_id_fits():
    longest = Options(
        length=1999,
        temperature=1.9999,
        top_p=0.9999,
        tempo=399.99,
        instrument=127,
        key=KEYS[-1],
        style=STYLES[-1],
        include_seed=True,
        video=True,
    ).check()
    assert len(buttons.button_id("continue", longest, "f" * 16)) <= 100


@pytest.mark.parametrize(
    "cid",
    [
        "etude:reroll:-5:1:0.95:0:0:-",
        "etude:reroll:500:1:1e-05:0:0:-",
        "etude:reroll:500:1:0.95:0:0:-:k123",
        "etude:reroll:500:1:0.95:0:0:0123456789ABCDEF",
        "etude:reroll:500:1:0.95:0:0:-:junk",
        "etude:reroll:500:1:0.95:0:0:-:k24",
        "etude:reroll:500:1:0.95:0:0:-:k99",
        "etude:bogus:1",
        "etude:",
        "etude:reroll:l500:l400",
        "etude:reroll:x1",
        "etude:reroll:l-5",
        "etude:reroll:p1e-05",
        "etude:reroll:k24",
        "etude:reroll:i128",
        "etude:reroll:v2",
        "etude:reroll:sABC",
        "etude:harmonize:t1",
        "etude:harmonize:1:0:999:0123456789abcdef",
        "etude:harmonize:9:0:0:0123456789abcdef",
        "etude:harmonize:1:5:0:0123456789abcdef",
        "etude:reroll:l1:" + "t1:" * 40,
    ],
)
def test_forged_ids_are_refused_in_one_line(cid):
    with pytest.raises(BadOption, match="^this button no longer works") as e:
        buttons.parse(cid)
    assert "\n" not in str(e.value)


def test_ids_posted_before_the_codec_still_work():
    # The old ids carried every value: the temperature then was 1, every style's.
    assert buttons.parse("etude:reroll:500:1:0.95:0:0:-").options == Options(temperature=1.0).check()
    old = buttons.parse("etude:continue:40:1.25:0.9:120:19:0123456789abcdef:k3")
    assert old.options == Options(
        length=40, temperature=1.25, top_p=0.9, tempo=120, instrument=19, key=KEYS[3]
    )
    assert old.file_key == "0123456789abcdef"
    chorale = buttons.parse("etude:harmonize:0.8:90:52:00000000deadbeef:k15")
    assert chorale.options == Options(temperature=0.8, tempo=90, instrument=52, key=KEYS[15]).check()
    assert chorale.action == "harmonize" and chorale.file_key == "00000000deadbeef"


def test_a_button_under_a_lower_cap_says_what_is_wrong():
    press = buttons.parse(buttons.button_id("reroll", Options(length=1500), None))
    with pytest.raises(BadOption, match="at most 300"):
        press.options.check(max_length=300)
