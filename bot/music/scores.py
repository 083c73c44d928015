"""Reading scores for training: one music21 score or a training file into a `Piece`, and the plain-JSON
cache that keeps what was parsed (corpus and folk collections build on both)."""

from __future__ import annotations

import importlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bot.errors import BadData, EtudeError
from bot.music.events import Event, Piece, group_notes
from bot.music.meter import Meter, score_meter, valid_signature

CACHE_VERSION = 3  # 2: events carry the fermata mark; 3: pieces carry their meter
MIDI_SUFFIXES = {".mid", ".midi", ".smf"}


def parse_pool(workers: int) -> ProcessPoolExecutor:
    """Processes to parse scores in, started from a fresh server process rather than forked from this
    one: a fork of a process that holds TensorFlow's runtime (training, evaluation, the tests) can crash
    when the child frees one of the runtime's objects, as music21's pickling of a parsed score may."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


def cache_dir() -> Path:
    """The cache folder of `bot.settings.Environment`, made if missing; read afresh, so tests can move it."""
    from bot.settings import Environment

    path = Environment().cache_folder
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- reading one score -----------------------------------------------------------------------------
def music21_module(module: str):
    """A module of music21, which only training and evaluation need; one line where it is not installed."""
    try:
        return importlib.import_module(f"music21.{module}")
    except ImportError:
        raise BadData("music21 is not installed: pip install -e '.[train]' (scripts/setup.sh does)") from None


def piece_from_stream(score, name: str) -> Piece:
    """Events of a music21 score: every pitched note, ties merged, grace notes left out, fermatas kept."""
    expressions, m21tempo = music21_module("expressions"), music21_module("tempo")
    flat = score.stripTies().flatten()
    notes = []
    for n in flat.notes:
        if n.duration.isGrace or n.quarterLength <= 0:
            continue
        velocity = n.volume.velocity or 80
        fermata = any(isinstance(x, expressions.Fermata) for x in n.expressions)
        for p in getattr(n, "pitches", ()):
            notes.append((float(n.offset), float(n.quarterLength), p.midi, velocity, fermata))
    marks = list(flat.getElementsByClass(m21tempo.MetronomeMark))
    bpm = marks[0].getQuarterBPM() if marks and marks[0].getQuarterBPM() else 100.0
    piece = Piece(name, group_notes(notes), float(bpm))
    meter = score_meter_of(score)
    if meter is not None:
        piece.meta["meter"] = meter.to_json()
    return piece


def score_meter_of(score) -> Meter | None:
    """A score's first time signature and where its bars start (its first bar, a pickup counted back),
    or None when it has no time signature."""
    m21meter = music21_module("meter")
    signatures = list(score.flatten().getElementsByClass(m21meter.TimeSignature))
    if not signatures:
        return None
    ts = signatures[0]
    if not valid_signature(ts.numerator, ts.denominator):
        return None
    parts = list(getattr(score, "parts", [])) or [score]
    measures = list(parts[0].getElementsByClass("Measure"))
    first_bar = 0.0
    if measures:
        first = measures[0]
        first_bar = float(first.offset) - float(first.paddingLeft or 0.0)
    return score_meter(int(ts.numerator), int(ts.denominator), first_bar)


def parse_corpus_work(name: str) -> Piece:
    corpus = music21_module("corpus")
    return piece_from_stream(corpus.parse(name), name)


def read_score_file(path: Path) -> Piece:
    """A MIDI file through the safe reader, or a MusicXML/Humdrum/ABC file through music21."""
    if path.suffix.lower() in MIDI_SUFFIXES:
        from bot.music.midi import SeedLimits, read_midi_file

        # Training files are the user's own and may be long: keep far more notes than a seed may have.
        limits = SeedLimits(
            max_bytes=32 * 1024 * 1024, max_notes=200_000, max_seconds=4 * 3600, parse_seconds=120.0
        )
        return read_midi_file(path, limits)
    converter = music21_module("converter")
    return piece_from_stream(converter.parse(str(path)), path.name)


def read_or_none(path: str) -> tuple[str, Piece | None, str]:
    try:
        return path, read_score_file(Path(path)), ""
    except EtudeError as e:
        return path, None, str(e)
    except Exception as e:  # a corrupt training file must not stop training: say which one and go on
        return path, None, f"{type(e).__name__}: {e}"


# -- plain-JSON cache ------------------------------------------------------------------------------
def piece_to_json(p: Piece) -> dict:
    return {
        "name": p.name,
        "tempo": p.tempo,
        "events": [[e.onset, e.duration, list(e.pitches), e.velocity, int(e.fermata)] for e in p.events],
        "meter": p.meta.get("meter"),
    }


def piece_from_json(d: dict) -> Piece:
    piece = Piece(
        d["name"], [Event(on, du, tuple(ps), v, bool(f)) for on, du, ps, v, f in d["events"]], d["tempo"]
    )
    if d.get("meter"):
        piece.meta["meter"] = list(d["meter"])
    return piece


def load_cache(path: Path) -> dict:
    """The entries of a cache file (empty when it is missing, unreadable or of another version)."""
    try:
        data = json.loads(path.read_text())
        return data.get("entries", {}) if data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, AttributeError):
        return {}


def save_cache(path: Path, entries: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}))
    tmp.replace(path)
