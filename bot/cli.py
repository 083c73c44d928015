"""The `etude` command: compose, train, eval, bench, bot, worker.

Bad input ends with exit status 2 and one `error: …` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import EtudeError

log = logging.getLogger("etude")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors follow the same one-line rule
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive_minutes(s: str) -> float:
    v = float(s)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


def cmd_train(args) -> int:
    from .train import train

    card = train(
        args.data,
        Path(args.out),
        preset=args.preset,
        minutes=args.minutes,
        epochs=args.epochs,
        patience=args.patience,
        limit=args.limit,
        fresh=args.fresh,
        steps_per_epoch=args.steps_per_epoch,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    t = card["training"]
    print(
        f"saved {args.out}: {t['epochs']} epochs, {t['seconds'] / 60:.1f} min, best validation loss "
        f"{t['best_val_loss']}"
    )
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate

    result = evaluate(
        args.model,
        data=args.data,
        tutorial=args.tutorial,
        write_card=args.write_card,
        tutorial_notes=args.tutorial_notes,
    )
    if args.json:
        print(json.dumps(result))
    else:
        from .evaluate import table

        print(table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="etude", description="Compose music with an LSTM, from the command line or on Discord.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on music21's corpus or a folder of MIDI files")
    t.add_argument(
        "--data",
        default="chorales",
        help="'chorales' (371 Bach chorales, bundled with music21), 'corpus:<composer>', or a folder",
    )
    t.add_argument("--out", default="models/etude-chorales", help="model folder to write (and resume from)")
    t.add_argument("--preset", default="etude", help="network preset: etude, small, or tutorial")
    t.add_argument("--minutes", type=_positive_minutes, help="wall-clock training budget")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--patience", type=int, default=4, help="epochs without a better validation loss")
    t.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass)")
    t.add_argument("--limit", type=int, help="use only the first N pieces")
    t.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start over")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="score a model and its baselines on the validation pieces")
    e.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    e.add_argument("--data", default=None, help="data source (default: the one the model was trained on)")
    e.add_argument(
        "--tutorial",
        default=None,
        help="folder of the tutorial-network baseline (default: models/baselines/tutorial-<data>)",
    )
    e.add_argument(
        "--tutorial-notes",
        type=int,
        default=1500,
        help="validation notes to score the tutorial network on (it needs a 100-token pass each)",
    )
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--write-card", action="store_true", help="store the figures in the model's card")
    e.set_defaults(func=cmd_eval)
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


if __name__ == "__main__":
    raise SystemExit(main())
