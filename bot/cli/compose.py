"""`etude compose` and `etude harmonize`: a piece from the model, written as files whose paths go to stdout.

Everything a user can get wrong (the options, the output folder, ffmpeg, the soundfont, the seed or the
melody) is checked before the model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bot.cli.args import option_help, option_type
from bot.errors import EtudeError
from bot.options import (
    INSTRUMENT_HELP,
    INSTRUMENTS,
    KEY_HELP,
    MELODY_HELP,
    PERFORMANCE_HELP,
    PERFORMANCES,
    SEED_HELP,
    SPECS,
    STYLE_HELP,
    STYLES,
    UPLOAD_LIMIT_BYTES,
    VIDEO_HELP,
    Options,
    parse_instrument,
)

if TYPE_CHECKING:  # the model and rendering load only when a command needs them
    from bot.model.composer import Composer, Composition
    from bot.render.files import Outputs
    from bot.settings import Settings

T = TypeVar("T")


def _key(text: str) -> str:
    from bot.options import parse_key

    try:
        return parse_key(text)
    except EtudeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _performance(text: str) -> str:
    from bot.options import parse_performance

    try:
        return parse_performance(text)
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


def seed_path(text: str, max_bytes: int) -> Path:
    """The `--seed` file, checked as every file the command reads is (`bot.paths.checked_file`)."""
    from bot.errors import BadSeed
    from bot.paths import checked_file

    path, _ = _given_path(text, BadSeed("--seed is empty: give a MIDI file, or leave --seed out"))
    return checked_file(path, "the seed", max_bytes, BadSeed)


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


def options_from_args(args: argparse.Namespace) -> Options:
    """Checked options from the flags a command's parser defines; the others keep their defaults."""
    asked = {f.name: getattr(args, f.name) for f in fields(Options) if hasattr(args, f.name)}
    return Options(**{**asked, "instrument": parse_instrument(args.instrument)}).check()


def _piece_to_files(
    args: argparse.Namespace,
    read: Callable[[Settings], T],
    make: Callable[[Composer, Options, Settings, T], Composition],
) -> tuple[Composition, T, Outputs]:
    """The way of compose and harmonize: everything a user can get wrong (the options, the output folder,
    ffmpeg and the soundfont, then what `read` reads) is checked before the model loads; then `make` the
    piece and write its files. The options are the fields of `Options` that the command's parser defines;
    the others keep their defaults."""
    from bot.model import backend
    from bot.model.composer import Composer
    from bot.render.files import write_outputs
    from bot.settings import get_settings

    backend.serving()
    settings = get_settings()
    soundfont = args.soundfont or settings.soundfont
    checked = options_from_args(args)
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
        path = seed_path(args.seed, settings.seed_limits().max_bytes)
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
        f"{piece.onsets} notes and chords, {piece.key_text}, {piece.tempo:.0f} bpm, rng seed {piece.options.rng_seed}"
        + "".join(f"; {s}" for s in piece.said),
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
        f"rng seed {piece.options.rng_seed}" + "".join(f"; {s}" for s in piece.said),
    )
    return 0


def _add_piece_arguments(p: argparse.ArgumentParser, *names: str, files: str, largest: str) -> None:
    """What compose and harmonize both take: the options `names` (range, default and help from
    `bot.options.SPECS`), the instrument, and where the model, the files and the soundfont are."""
    for name in names:
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=option_type(name),
            default=SPECS[name].default,
            help=option_help(name),
        )
    p.add_argument(
        "--instrument", default="piano", help=f"{INSTRUMENT_HELP}: 0-127 or a name ({', '.join(INSTRUMENTS)})"
    )
    p.add_argument(
        "--performance",
        type=_performance,
        default=PERFORMANCES[0],
        help=f"{PERFORMANCE_HELP} (default {PERFORMANCES[0]})",
    )
    p.add_argument("--model", help="model folder (default: MODEL_DIR or the shipped model)")
    p.add_argument("--out", default="out", help=f"folder for the {files}")
    p.add_argument(
        "--max-bytes",
        type=_byte_count,
        default=UPLOAD_LIMIT_BYTES,
        help=f"largest {largest} to write (default {UPLOAD_LIMIT_BYTES // 2**20} MiB, Discord's upload limit)",
    )
    p.add_argument("--soundfont", help="General MIDI soundfont (default: SOUNDFONT or the system's)")


def add_compose(sub: argparse._SubParsersAction) -> None:
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
    c.add_argument(
        "--style", type=lambda text: text.strip().lower(), help=f"{STYLE_HELP}: {', '.join(STYLES)}"
    )
    c.add_argument("--video", action="store_true", help=VIDEO_HELP)
    c.add_argument("--include-seed", action="store_true", help="start the output with the seed itself")
    c.set_defaults(func=cmd_compose)


def add_harmonize(sub: argparse._SubParsersAction) -> None:
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
