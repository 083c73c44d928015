"""The `etude` command: compose, harmonize, train, eval, bench, bot, worker.

Bad input ends with exit status 2 and one `error: …` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bot.errors import EtudeError
from bot.options import (
    INSTRUMENT_HELP,
    INSTRUMENTS,
    KEY_HELP,
    MELODY_HELP,
    SEED_HELP,
    SPECS,
    VIDEO_HELP,
    Options,
    parse_instrument,
)

if TYPE_CHECKING:  # the model and rendering load only when a command needs them
    from bot.model.composer import Composer, Composition
    from bot.render.files import Outputs
    from bot.settings import Settings

T = TypeVar("T")

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


def _given_path(text: str, if_empty: EtudeError) -> tuple[Path, str]:
    """A path option's text as a path, and as an error message shows it (80 characters at most); `if_empty`
    is raised for an empty one, which would otherwise mean the current folder."""
    if not text:
        raise if_empty
    return Path(text), text if len(text) <= 80 else text[:77] + "..."


def writable_folder(text: str) -> Path:
    """The `--out` folder, made if need be and proven writable by writing into it; `BadOption` otherwise."""
    from bot.errors import BadOption

    path, shown = _given_path(text, BadOption("--out is empty: give a folder for the files"))
    try:
        if path.exists() and not path.is_dir():
            raise BadOption(f"--out {shown} is not a folder")
        path.mkdir(parents=True, exist_ok=True)
        # A real write: permission bits do not tell a read-only file system, nor what root may do.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".etude-probe-"):
            pass
    except OSError as e:
        raise BadOption(f"--out {shown} cannot be written: {e.strerror or e}") from None
    return path


def seed_path(text: str) -> Path:
    """The `--seed` file: a regular file (not a FIFO, device or folder that could block or mislead)."""
    from bot.errors import BadSeed

    path, shown = _given_path(text, BadSeed("--seed is empty: give a MIDI file, or leave --seed out"))
    try:
        st = path.stat()
    except OSError as e:
        raise BadSeed(f"the seed {shown} cannot be read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadSeed(f"the seed {shown} is not a regular file")
    return path


@contextmanager
def paths_only_on_stdout() -> Iterator[None]:
    """Send whatever the libraries write to file descriptor 1 (FluidSynth's C logger, for one) to stderr
    while the work runs, so that stdout carries only the paths printed after it."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced (pytest capture, a notebook)
        yield
        return
    saved = os.dup(fd)
    os.dup2(sys.stderr.fileno(), fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _ready_to_write(out: str, soundfont: str | None) -> Path:
    """What a user can get wrong about the outputs, checked before the model loads: ffmpeg, a soundfont
    that loads, a folder that can be written. Returns the folder."""
    from bot.render.audio import ffmpeg_path, find_soundfont
    from bot.render.files import local_synth

    ffmpeg_path()
    local_synth(find_soundfont(soundfont))
    return writable_folder(out)


def _print_files(out, note: str) -> None:
    """The paths on stdout, one a line; the summary (and what was reduced to fit) on stderr."""
    for path in out.paths.values():
        print(path)
    print(f"{note}; {out.rendered.note}" if out.rendered.note else note, file=sys.stderr)


def _piece_to_files(
    args: argparse.Namespace,
    read: Callable[[Settings], T],
    make: Callable[[Composer, Options, Settings, T], Composition],
) -> tuple[Composition, T, Outputs]:
    """The way of compose and harmonize: everything a user can get wrong (the options, the output folder,
    ffmpeg and the soundfont, then what `read` reads) is checked before the model loads; then `make` the
    piece and write its files. The options are the fields of `Options` that the command's parser defines;
    the others keep their defaults."""
    from bot.model.composer import Composer
    from bot.render.files import write_outputs
    from bot.settings import get_settings

    settings = get_settings()
    soundfont = args.soundfont or settings.soundfont
    asked = {f.name: getattr(args, f.name) for f in fields(Options) if hasattr(args, f.name)}
    checked = Options(**{**asked, "instrument": parse_instrument(args.instrument)}).check()
    with paths_only_on_stdout():  # library noise on fd 1 would mix with the paths
        out_dir = _ready_to_write(args.out, soundfont)
        given = read(settings)
        composer = Composer(args.model or settings.model_dir)
        piece = make(composer, checked, settings, given)
        out = write_outputs(
            piece, out_dir, max_bytes=args.max_bytes, soundfont=soundfont, video=checked.video
        )
    return piece, given, out


def cmd_compose(args) -> int:
    from bot.music.midi import read_bounded, read_midi

    def read_seed(settings: Settings) -> bytes | None:
        if args.seed is None:
            return None
        path = seed_path(args.seed)
        data = read_bounded(path, settings.seed_limits().max_bytes, "the seed")
        read_midi(data, path.stem, settings.seed_limits())  # refuse a bad seed before the model loads
        return data

    def compose(
        composer: Composer, options: Options, settings: Settings, seed_bytes: bytes | None
    ) -> Composition:
        seed = composer.seed(seed_bytes, Path(args.seed).stem, settings.seed_limits()) if seed_bytes else None
        return composer.compose_one(options, seed)

    piece, _, out = _piece_to_files(args, read_seed, compose)
    _print_files(
        out,
        f"{piece.onsets} notes and chords, {piece.key_text}, {piece.tempo:.0f} bpm, rng seed {piece.options.rng_seed}",
    )
    return 0


def cmd_harmonize(args) -> int:
    from bot.model.harmonize import harmonize
    from bot.music.melody import read_melody_file

    piece, melody, out = _piece_to_files(
        args,
        lambda settings: read_melody_file(Path(args.melody), settings.seed_limits()),
        lambda composer, options, _, melody: harmonize(composer, options, melody),
    )
    moved = f", moved {melody.octaves:+d} octaves" if melody.octaves else ""
    _print_files(
        out,
        f"{len(melody.notes)} melody notes in four parts{moved}, {piece.key_text}, {piece.tempo:.0f} bpm, "
        f"rng seed {piece.options.rng_seed}",
    )
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
        overrides={
            k: v
            for k, v in {
                "batch_size": args.batch_size,
                "dropout": args.dropout,
                "learning_rate": args.learning_rate,
            }.items()
            if v is not None
        }
        or None,
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
    from bot.model.evaluate import evaluate, evaluate_music, music_table, sweep_table
    from bot.settings import get_settings

    model = args.model or get_settings().model_dir
    if args.harmony:
        from bot.model.harmony_eval import evaluate_harmony, harmony_table

        result = evaluate_harmony(
            model,
            limit=args.chorales,
            temperature=args.temperature,
            baseline=not args.no_baseline,
        )
        print(json.dumps(result) if args.json else harmony_table(result))
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
        from bot.model.evaluate import table

        parts = [table(result)] if "baselines" in result else []
        if "music" in result:
            parts.append(music_table(result["music"], result.get("key_fidelity")))
        print("\n\n".join(parts))
    return 0


def _add_piece_arguments(p: argparse.ArgumentParser, *names: str, files: str, largest: str) -> None:
    """What compose and harmonize both take: the options `names` (range, default and help from
    `bot.options.SPECS`), the instrument, and where the model, the files and the soundfont are."""
    for name in names:
        p.add_argument(
            f"--{name.replace('_', '-')}", type=_option(name), default=SPECS[name].default, help=_help(name)
        )
    p.add_argument(
        "--instrument", default="piano", help=f"{INSTRUMENT_HELP}: 0-127 or a name ({', '.join(INSTRUMENTS)})"
    )
    p.add_argument("--model", help="model folder (default: MODEL_DIR or the shipped model)")
    p.add_argument("--out", default="out", help=f"folder for the {files}")
    p.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=10 * 1024 * 1024,
        help=f"largest {largest} to write (default 10 MiB, Discord's upload limit)",
    )
    p.add_argument("--soundfont", help="General MIDI soundfont (default: SOUNDFONT or the system's)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="etude", description="Compose music with an LSTM, from the command line or on Discord.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on music21's corpus or a folder of MIDI files")
    t.add_argument(
        "--data",
        help="'chorales' (371 Bach chorales, bundled with music21; the default), 'music21' (the chorales with music21's "
        "Palestrina, Monteverdi, Josquin and Haydn and Mozart quartets, each with a style token), "
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
    t.add_argument("--dropout", type=float, help="dropout after each LSTM layer (default: the preset's)")
    t.add_argument("--learning-rate", type=float, help="the optimizer's step size (default: the preset's)")
    t.add_argument("--limit", type=int, help="use only the first N pieces")
    t.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out and start over")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser(
        "compose", help="compose a piece: writes .mid, .ogg, .wav and .png (and .mp4), prints their paths"
    )
    c.add_argument("--seed", help=SEED_HELP)
    c.add_argument(
        "--key", type=_key, help=f"{KEY_HELP}: e.g. 'E minor', 'Eb major' (the 24 major and minor keys)"
    )
    _add_piece_arguments(
        c, "length", "temperature", "top_p", "tempo", "rng_seed", files="files", largest="file"
    )
    c.add_argument("--video", action="store_true", help=VIDEO_HELP)
    c.add_argument("--include-seed", action="store_true", help="start the output with the seed itself")
    c.set_defaults(func=cmd_compose)

    h = sub.add_parser(
        "harmonize",
        help="harmonize a melody as a four-part chorale: writes .mid, .wav and .png, prints their paths",
    )
    h.add_argument("--melody", required=True, help=MELODY_HELP)
    h.add_argument(
        "--key",
        type=_key,
        help="The key to write in; without it, the melody's own: e.g. 'E minor', 'Eb major'",
    )
    _add_piece_arguments(h, "temperature", "tempo", "rng_seed", files="three files", largest=".wav")
    h.set_defaults(func=cmd_harmonize)

    b = sub.add_parser("bench", help="measure sampling speed, throughput, stage timings and memory")
    b.add_argument("--model", help="model folder (default: the shipped model)")
    b.add_argument("--quick", action="store_true", help="fewer notes and repeats, for a smoke test")
    b.add_argument(
        "--harmonize", action="store_true", help="only the harmonizer: 100 melody notes end to end"
    )
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
    e.add_argument(
        "--harmony",
        action="store_true",
        help="harmonize the validation chorales' sopranos and compare the harmony with Bach's, the network's without the harmony prior, the prior's own bass and the n-gram's",
    )
    e.add_argument("--chorales", type=int, help="with --harmony: only the first N validation chorales")
    e.add_argument(
        "--temperature",
        type=_option("temperature"),
        default=SPECS["temperature"].default,
        help=f"with --harmony: {_help('temperature')}",
    )
    e.add_argument("--no-baseline", action="store_true", help="with --harmony: leave out the n-gram")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--write-card", action="store_true", help="store the figures in the model's card")
    e.add_argument(
        "--quick",
        action="store_true",
        help="musical section on 8 pieces of 200 notes and 16 seeds (default 24 of 500 and every piece)",
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
