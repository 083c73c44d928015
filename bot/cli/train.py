"""`etude train` and `etude eval`: train a model on a corpus, and score it against its baselines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bot.cli.args import option_help, option_type
from bot.errors import BadOption, EtudeError
from bot.options import SPECS, style_temperature


def _positive_minutes(s: str) -> float:
    v = float(s)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s[:40]!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


def cmd_train(args) -> int:
    from bot.model.train import corpus_tokens, save_tokens, train

    if args.tokens and args.data:
        raise EtudeError("give --data or --tokens, not both")
    if args.export_tokens:
        if args.tokens:
            raise EtudeError("--export-tokens writes a tokens file from --data; it cannot read --tokens")
        data = corpus_tokens(args.data or "chorales", limit=args.limit, keys=args.keys)
        save_tokens(Path(args.export_tokens), data)
        tokens = sum(len(s) for s in data.train + data.valid)
        print(
            f"wrote {args.export_tokens}: {len(data.train)} training and {len(data.valid)} validation pieces, "
            f"{tokens:,} tokens, vocabulary {len(data.vocab)}"
        )
        return 0
    card = train(
        args.data,
        Path(args.out),
        preset=args.preset,
        minutes=args.minutes,
        epochs=args.epochs,
        **({"patience": args.patience} if args.patience is not None else {}),
        limit=args.limit,
        fresh=args.fresh,
        steps_per_epoch=args.steps_per_epoch,
        overrides={
            k: v
            for k, v in {
                "batch_size": args.batch_size,
                "dropout": args.dropout,
                "learning_rate": args.learning_rate,
                "stats_input": args.stats_input or None,
            }.items()
            if v is not None
        }
        or None,
        verbose=1 if sys.stdout.isatty() else 2,
        keys=args.keys,
        tokens=args.tokens,
        init=args.init,
        blend=args.blend,
    )
    t = card["training"]
    print(
        f"saved {args.out}: {t['epochs']} epochs, {t['seconds'] / 60:.1f} min, best validation loss "
        f"{t['best_val_loss']}"
    )
    return 0


def cmd_eval(args) -> int:
    from bot.cards import DEFAULT_MODEL
    from bot.eval.evaluate import evaluate
    from bot.eval.music_eval import evaluate_music, music_table, sweep_table
    from bot.settings import get_settings

    model = args.model or get_settings().model_dir or str(DEFAULT_MODEL)
    if args.previous:
        if not args.write_card:
            raise BadOption("--previous goes with --write-card: it stores the figures in the card")
        from bot.model.card import store_previous

        store_previous(model, args.previous)
    if args.harmony:
        from bot.eval.harmony_eval import evaluate_harmony, harmony_table

        result = evaluate_harmony(
            model,
            limit=args.chorales,
            temperature=style_temperature("chorale") if args.temperature is None else args.temperature,
            baseline=not args.no_baseline,
        )
        print(json.dumps(result) if args.json else harmony_table(result))
        return 0

    if args.methods:
        from bot.eval.listener_eval import evaluate_methods
        from bot.eval.methods import methods_table

        result = evaluate_methods(model, quick=args.quick)
        print(json.dumps(result) if args.json else methods_table(result["methods"]))
        return 0
    if args.fidelity or args.listener:
        result = {}
        if args.fidelity:
            from bot.eval.listener_eval import evaluate_fidelity

            result.update(evaluate_fidelity(model, quick=args.quick, write_card=args.write_card))
        if args.listener:
            from bot.eval.listener_eval import evaluate_listener

            result.update(evaluate_listener(model, quick=args.quick, write_card=args.write_card))
        if args.json:
            print(json.dumps(result))
        else:
            from bot.eval.fidelity import fidelity_table
            from bot.eval.listener_card import listener_table

            parts = [fidelity_table(result["fidelity"])] if "fidelity" in result else []
            parts += [listener_table(result["listener"])] if "listener" in result else []
            print("\n\n".join(parts))
        return 0
    if args.sweep:
        result = evaluate_music(
            model, data=args.data, quick=args.quick, sweep=True, write_card=args.write_card
        )
        print(json.dumps(result) if args.json else sweep_table(result["sweep"]))
        return 0
    result = {}
    if not args.music_only:
        result = evaluate(
            model,
            data=args.data,
            tutorial=args.tutorial,
            write_card=args.write_card,
            tutorial_notes=args.tutorial_notes,
        )
    if not args.no_music:
        music = evaluate_music(
            model, data=args.data, quick=args.quick, write_card=args.write_card, key_seeds=args.key_seeds
        )
        # Both sections name the model; the loss section's "model" holds its scores and stays.
        result.update({k: v for k, v in music.items() if k not in result})
    if args.json:
        print(json.dumps(result))
    else:
        from bot.eval.evaluate import table

        parts = [table(result)] if "baselines" in result else []
        if "music" in result:
            parts.append(music_table(result["music"], result.get("key_fidelity")))
        print("\n\n".join(parts))
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model on music21's corpus or a folder of MIDI files")
    t.add_argument(
        "--data",
        help="'chorales' (371 Bach chorales, bundled with music21; the default), 'music21' (the chorales with music21's "
        "Monteverdi, Josquin and Haydn and Mozart quartets, each with a style token), 'folk' (a share of "
        "music21's O'Neill's, Ryan's and Aird's folk tunes), 'lieder' (OpenScore's songs for voice and piano, "
        "kept in data/), 'corpus:<composer>', 'folk:<collection>', a folder, or several joined by '+'; each source needs an entry in bot/music/sources.py",
    )
    t.add_argument(
        "--keys",
        choices=["reference", "transpose"],
        default="reference",
        help="'reference': learn every piece in C major / A minor (the default); 'transpose': in its own "
        "key, moved at random every epoch",
    )
    t.add_argument("--tokens", help="train from a tokens file (.npz) written by --export-tokens; no music21")
    t.add_argument(
        "--export-tokens",
        metavar="FILE",
        help="encode --data into a tokens file (.npz) for another machine, and stop",
    )
    t.add_argument("--out", default="models/etude-chorales", help="model folder to write (and resume from)")
    t.add_argument("--preset", default="etude", help="network preset: etude, small, or tutorial")
    t.add_argument("--minutes", type=_positive_minutes, help="wall-clock training budget")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument(
        "--patience",
        type=int,
        help="epochs without a better validation loss before training stops (the learning rate halves "
        "on the way; the defaults are bot.model.train.PATIENCE and the preset's lr_patience)",
    )
    t.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass)")
    t.add_argument(
        "--batch-size",
        type=_positive_int,
        help="windows per training step (default: the preset's; a GPU wants hundreds)",
    )
    t.add_argument("--dropout", type=float, help="dropout after each LSTM layer (default: the preset's)")
    t.add_argument("--learning-rate", type=float, help="the optimizer's step size (default: the preset's)")
    t.add_argument("--limit", type=int, help="use only the first N pieces")
    t.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start over")
    t.add_argument(
        "--init",
        metavar="MODEL",
        help="start from this model folder's weights (same vocabulary) and go straight to the averaged "
        "epochs",
    )
    t.add_argument(
        "--blend",
        type=float,
        metavar="SHARE",
        help="with --init: the result is this share of the way from the start's weights to the run's "
        "(0.25: a quarter)",
    )
    t.add_argument(
        "--stats-input",
        action="store_true",
        help="tell the network each piece's statistics (bot/model/conditioning.py); with --init, the new "
        "inputs start at zero",
    )
    t.set_defaults(func=cmd_train)


def add_eval(sub: argparse._SubParsersAction) -> None:
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
    e.add_argument(
        "--harmony",
        action="store_true",
        help="harmonize the validation chorales' sopranos and compare the harmony with Bach's, the network's without the harmony prior, the prior's own bass and the n-gram's",
    )
    e.add_argument("--chorales", type=int, help="with --harmony: only the first N validation chorales")
    e.add_argument(
        "--temperature",
        type=option_type("temperature"),
        default=SPECS["temperature"].default,
        help=f"with --harmony: {option_help('temperature')}",
    )
    e.add_argument("--no-baseline", action="store_true", help="with --harmony: leave out the n-gram")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--write-card", action="store_true", help="store the figures in the model's card")
    e.add_argument(
        "--previous",
        metavar="FOLDER",
        help="with --write-card: the model this one replaces, whose headline figures (from its card) the card "
        "shows beside this one's",
    )
    e.add_argument(
        "--quick",
        action="store_true",
        help="musical section on 8 pieces of 200 notes and 16 seeds (default 24 of 500 and every piece); "
        "--fidelity on 2 pieces a style, --listener on 6 samples of 200 notes",
    )
    e.add_argument(
        "--key-seeds",
        help="also measure seed key fidelity on this data source (a folder of MIDI files, corpus:<composer>)",
    )
    e.add_argument("--music-only", action="store_true", help="only the musical section, not bits per note")
    e.add_argument("--no-music", action="store_true", help="only bits per note, not the musical section")
    e.add_argument(
        "--sweep",
        action="store_true",
        help="only the musical statistics for temperature 0.7/0.85/1.0 x top-p 0.9/0.95/1.0, "
        "each with its distance to the validation pieces, to choose the defaults by",
    )
    e.add_argument(
        "--fidelity",
        action="store_true",
        help="only seed fidelity: held-out pieces (every trained style, and piano music) cut into a seed and "
        "its real next part; the continuation's distance to the seed beside the real part's and a chorale's",
    )
    e.add_argument(
        "--methods",
        action="store_true",
        help="only seed fidelity of four ways to listen to the seed: the network alone, the short-term "
        "model, dynamic evaluation (gradient steps on the seed), both; for a network trained with "
        "--stats-input, with and without the seed's statistics, alone and with the short-term model",
    )
    e.add_argument(
        "--listener",
        action="store_true",
        help="only whether samples can be told from the validation chorales: a classifier on 32-beat "
        "excerpts, cross-validated by piece, phrase cadences and returning passages",
    )
    e.set_defaults(func=cmd_eval)
