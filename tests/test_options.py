"""Every option is defined once in `bot.options`; the CLI, the slash command, /help and the README agree."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.errors import BadOption
from bot.options import MAX_LENGTH, SPECS, Options, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("name", list(SPECS))
def test_range_edges(name):
    spec = SPECS[name]
    assert spec.check(spec.hi) == spec.hi
    with pytest.raises(BadOption):
        spec.check(spec.hi + 1)
    if spec.lo_open:
        with pytest.raises(BadOption):
            spec.check(spec.lo)
    else:
        assert spec.check(spec.lo) == spec.lo
        with pytest.raises(BadOption):
            spec.check(spec.lo - 1)
    for odd in (float("nan"), float("inf"), "3", True):
        with pytest.raises(BadOption):
            spec.check(odd)


def test_operator_cap_and_no_hidden_randomness():
    assert Options(length=MAX_LENGTH).check().length == MAX_LENGTH
    with pytest.raises(BadOption, match="at most 300"):
        Options(length=301).check(max_length=300)
    assert Options().check().rng_seed is None


def _cli_defaults() -> dict:
    compose = next(
        a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "compose"
    )[1]
    return {a.dest: a for a in compose._actions}


def test_cli_reads_the_specs():
    actions = _cli_defaults()
    for name, spec in SPECS.items():
        action = actions[name]
        assert action.default == spec.default, name
        assert spec.help in action.help, name
        assert action.type(str(spec.hi)) == spec.hi
        with pytest.raises(argparse.ArgumentTypeError):
            action.type(str(spec.hi + 1))


def test_slash_command_reads_the_specs():
    from bot.chat.commands import ComposeCog

    command = ComposeCog.compose
    params = {p.name: p for p in command.parameters}
    for name, spec in SPECS.items():
        p = params[name]
        assert p.min_value == spec.lo and p.max_value == spec.hi, name
        assert spec.help[:60] in p.description, name
        if spec.default is not None:
            assert p.default == spec.default, name


def test_readme_table_is_the_specs():
    assert markdown_table() in README.read_text(), "README's options table: paste `markdown_table()` again"


def test_the_key_option_is_the_same_everywhere():
    from bot.chat.commands import ComposeCog
    from bot.options import KEY_HELP, KEYS

    params = {p.name: p for p in ComposeCog.compose.parameters}
    assert [c.value for c in params["key"].choices] == list(KEYS) and len(KEYS) <= 25
    assert params["key"].description == KEY_HELP[:100]
    action = _cli_defaults()["key"]
    assert action.default is None and action.type("e minor") == "E minor"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown key"):
        action.type("H major")
    assert "`key`" in markdown_table()


def test_length_help_states_the_cadence_margin():
    from bot.options import cadence_margin

    assert "max(8, length/10)" in SPECS["length"].help
    assert [cadence_margin(n) for n in (1, 80, 100, 2000)] == [8, 8, 10, 200]


def test_the_style_option_is_the_same_everywhere():
    from bot.chat.commands import ComposeCog
    from bot.options import STYLE_HELP, STYLES

    assert STYLES == ("chorale", "renaissance", "classical", "folk")  # the styles the shipped model writes
    params = {p.name: p for p in ComposeCog.compose.parameters}
    assert [c.value for c in params["style"].choices] == list(STYLES)
    assert params["style"].description == STYLE_HELP[:100]
    action = _cli_defaults()["style"]
    assert action.default is None and action.type(" Renaissance") == "renaissance"
    assert Options(style="classical").check().style == "classical"
    assert "`style`" in markdown_table()


@pytest.mark.parametrize("bad", ["jazz", "other", "Chorale", "", 3])
def test_a_style_not_offered_is_one_line(bad):
    with pytest.raises(BadOption) as err:
        Options(style=bad).check()
    assert str(err.value) == "style must be one of: chorale, renaissance, classical, folk"
