"""What every command's parser shares: one-line usage errors, and options read from `bot.options.SPECS`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bot.errors import EtudeError
from bot.options import SPECS


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors follow the same one-line rule
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def option_type(name: str) -> Callable[[str], int | float | None]:
    """An argparse type that checks a value against the option's one definition in `bot.options`."""
    spec = SPECS[name]

    def parse(text: str) -> int | float | None:
        try:
            value = int(text) if spec.kind is int else float(text)
        except ValueError:
            kind = "a whole number" if spec.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {kind}") from None
        try:
            return spec.check(value)
        except EtudeError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def option_help(name: str) -> str:
    """The option's help with its range and default, as `--help` shows it."""
    spec = SPECS[name]
    default = "" if spec.default is None else f"; default {spec.default:g}"
    return f"{spec.help} ({spec.range_text()}{default})"
