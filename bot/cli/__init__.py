"""The `etude` command: compose, harmonize, train, eval, bench, bot, worker.

One module per group of commands (compose, train, bench, serve), each adding its own subparsers; the
parser helpers they share are in `bot.cli.args`. Bad input ends with exit status 2 and one `error: …` line
on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bot.cli import bench, compose, serve, train
from bot.cli.args import Parser
from bot.errors import EtudeError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="etude", description="Compose music with an LSTM, from the command line or on Discord.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    # The order `etude --help` lists them in.
    train.add_train(sub)
    compose.add_compose(sub)
    compose.add_harmonize(sub)
    bench.add_bench(sub)
    serve.add_bot(sub)
    serve.add_worker(sub)
    train.add_eval(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return args.func(args)
    except EtudeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
