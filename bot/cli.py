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

from bot.errors import EtudeError
from bot.options import INSTRUMENT_HELP, INSTRUMENTS, KEY_HELP, SEED_HELP, SPECS

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


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s[:40]!r} is not a whole number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return v


def _option(name: str):
    """An argparse type that checks a value against the option's one definition in `bot.options`."""
    spec = SPECS[name]

    def parse(text: str):
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


def _help(name: str) -> str:
    spec = SPECS[name]
    default = "" if spec.default is None else f"; default {spec.default:g}"
    return f"{spec.help} ({spec.range_text()}{default})"


def _key(text: str) -> str:
    from bot.options import parse_key

    try:
        return parse_key(text)
    except EtudeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _byte_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if not 64 * 1024 <= value <= 2**40:
        raise argparse.ArgumentTypeError("must be between 65536 and 2**40 bytes")
    return value


def cmd_compose(args) -> int:
    from bot.model.composer import Composer
    from bot.music.midi import read_midi_file
    from bot.options import Options, parse_instrument
    from bot.render.audio import find_soundfont, fluidsynth_path
    from bot.render.files import write_outputs
    from bot.settings import get_settings

    settings = get_settings()
    soundfont = args.soundfont or settings.soundfont
    # Everything a user can get wrong is checked before the model loads.
    options = Options(
        length=args.length,
        temperature=args.temperature,
        top_p=args.top_p,
        tempo=args.tempo,
        instrument=parse_instrument(args.instrument),
        rng_seed=args.rng_seed,
        include_seed=args.include_seed,
        key=args.key,
    ).check()
    fluidsynth_path()
    find_soundfont(soundfont)
    seed_bytes = None
    if args.seed:
        seed_path = Path(args.seed)
        read_midi_file(seed_path, settings.seed_limits())  # refuse a bad seed before loading the model
        seed_bytes = seed_path.read_bytes()
    composer = Composer(args.model or settings.model_dir)
    seed = composer.seed(seed_bytes, Path(args.seed).stem, settings.seed_limits()) if seed_bytes else None
    piece = composer.compose_one(options, seed)
    out = write_outputs(piece, Path(args.out), max_bytes=args.max_bytes, soundfont=soundfont)
    for path in (out.midi, out.wav, out.png):
        print(path)
    note = f"{piece.onsets} notes and chords, {piece.key_text}, {piece.tempo:.0f} bpm, rng seed {options.rng_seed}"
    if out.audio.shortened:
        note += f"; the audio was cut to {out.audio.seconds:.0f} s to fit {args.max_bytes} bytes"
    print(note, file=sys.stderr)
    return 0


def cmd_bench(args) -> int:
    from bot.bench import run_bench

    run_bench(args)
    return 0


def cmd_bot(args) -> int:
    import asyncio

    from bot.chat.client import run_bot
    from bot.settings import get_settings

    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("discord").setLevel(logging.WARNING if not args.verbose else logging.INFO)
    try:
        asyncio.run(run_bot(get_settings()))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_worker(args) -> int:
    import asyncio

    from bot.queue.worker import serve_worker
    from bot.settings import get_settings

    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(serve_worker(get_settings()))
    return 0


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
        patience=args.patience,
        limit=args.limit,
        fresh=args.fresh,
        steps_per_epoch=args.steps_per_epoch,
        overrides={"batch_size": args.batch_size} if args.batch_size else None,
        verbose=1 if sys.stdout.isatty() else 2,
        keys=args.keys,
        tokens=args.tokens,
    )
    t = card["training"]
    print(
        f"saved {args.out}: {t['epochs']} epochs, {t['seconds'] / 60:.1f} min, best validation loss "
        f"{t['best_val_loss']}"
    )
    return 0


def cmd_eval(args) -> int:
    from bot.model.evaluate import evaluate
    from bot.settings import get_settings

    result = evaluate(
        args.model or get_settings().model_dir,
        data=args.data,
        tutorial=args.tutorial,
        write_card=args.write_card,
        tutorial_notes=args.tutorial_notes,
    )
    if args.json:
        print(json.dumps(result))
    else:
        from bot.model.evaluate import table

        print(table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="etude", description="Compose music with an LSTM, from the command line or on Discord.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on music21's corpus or a folder of MIDI files")
    t.add_argument(
        "--data",
        help="'chorales' (371 Bach chorales, bundled with music21; the default), 'music21' (the chorales with music21's "
        "Palestrina, Monteverdi, Josquin and Haydn, Mozart, Beethoven quartets, each with a style token), "
        "'corpus:<composer>', a folder, or several joined by '+'",
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
    t.add_argument("--patience", type=int, default=4, help="epochs without a better validation loss")
    t.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass)")
    t.add_argument(
        "--batch-size",
        type=_positive_int,
        help="windows per training step (default: the preset's; a GPU wants hundreds)",
    )
    t.add_argument("--limit", type=int, help="use only the first N pieces")
    t.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start over")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compose", help="compose a piece: writes .mid, .wav and .png, prints their paths")
    c.add_argument("--length", type=_option("length"), default=SPECS["length"].default, help=_help("length"))
    c.add_argument("--seed", help=SEED_HELP)
    c.add_argument(
        "--temperature",
        type=_option("temperature"),
        default=SPECS["temperature"].default,
        help=_help("temperature"),
    )
    c.add_argument("--top-p", type=_option("top_p"), default=SPECS["top_p"].default, help=_help("top_p"))
    c.add_argument("--tempo", type=_option("tempo"), help=_help("tempo"))
    c.add_argument(
        "--instrument", default="piano", help=f"{INSTRUMENT_HELP}: 0-127 or a name ({', '.join(INSTRUMENTS)})"
    )
    c.add_argument("--rng-seed", type=_option("rng_seed"), help=_help("rng_seed"))
    c.add_argument(
        "--key", type=_key, help=f"{KEY_HELP}: e.g. 'E minor', 'Eb major' (the 24 major and minor keys)"
    )
    c.add_argument("--model", help="model folder (default: MODEL_DIR or the shipped model)")
    c.add_argument("--out", default="out", help="folder for the three files")
    c.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=10 * 1024 * 1024,
        help="largest .wav to write (default 10 MiB, Discord's upload limit)",
    )
    c.add_argument("--include-seed", action="store_true", help="start the output with the seed itself")
    c.add_argument("--soundfont", help="General MIDI soundfont (default: SOUNDFONT or the system's)")
    c.set_defaults(func=cmd_compose)

    b = sub.add_parser("bench", help="measure sampling speed, throughput, stage timings and memory")
    b.add_argument("--model", help="model folder (default: the shipped model)")
    b.add_argument("--quick", action="store_true", help="fewer notes and repeats, for a smoke test")
    b.add_argument("--redis", help="also measure throughput through Redis workers at this URL")
    b.add_argument(
        "--sections",
        help="comma-separated: sampler, train, e2e, cold (default: all); sampler and train need neither "
        "music21 nor FluidSynth",
    )
    b.add_argument("--batches", help="comma-separated sampler batch sizes (default: by device)")
    b.add_argument(
        "--tokens", help="tokens file (.npz) for the training figures (default: the model's own samples)"
    )
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("bot", help="run the Discord bot (needs DISCORD_TOKEN)")
    d.set_defaults(func=cmd_bot)

    w = sub.add_parser("worker", help="sample jobs from the Redis queue (REDIS_URL); one per GPU")
    w.set_defaults(func=cmd_worker)

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
