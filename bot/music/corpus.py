"""Training data: scores from music21's corpus or a folder of MIDI files, cached as JSON, split by piece."""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bot.errors import BadData
from bot.music.encoding import Vocabulary
from bot.music.events import Event, Piece, transpose
from bot.music.keys import estimate_key
from bot.music.meter import Meter, meter_of
from bot.music.scores import (  # noqa: F401  (cache_dir, piece_from_stream, read_score_file: used by callers)
    CACHE_VERSION,
    MIDI_SUFFIXES,
    cache_dir,
    load_cache,
    music21_module,
    parse_corpus_work,
    parse_pool,
    piece_from_json,
    piece_from_stream,
    piece_to_json,
    read_or_none,
    read_score_file,
    save_cache,
)
from bot.music.sources import FOLK_SOURCES, check_trainable, entry, is_folder

log = logging.getLogger(__name__)

DEFAULT_DATA = "chorales"
PARTS_CACHE = "chorale-parts-v3.json"  # the chorales' four parts apart and their meter (v3), for harmony
VALIDATION_SHARE = 10  # one piece in ten, chosen by a hash of its name
SCORE_SUFFIXES = {".mxl", ".musicxml", ".xml", ".krn", ".abc"}
# `--data music21`: music21's polyphonic corpora with the share of each one's scores it takes; the
# chorales last, so a cut (`limit`) keeps them whole. Each source's style token and terms are in
# `bot/music/sources.py`; Palestrina is not among them (his encoder reserves derivative formats there).
# Beethoven's quartets are left out: 26 pieces that would be 30% of the tokens, in a texture (string
# writing, fast figuration) far from a chorale; `music21+corpus:beethoven` adds them.
MUSIC21_SOURCES = (
    ("corpus:monteverdi", 1),
    ("corpus:josquin", 1),
    ("corpus:haydn", 1),
    ("corpus:mozart", 1),
    ("chorales", 1),
)
# The `--data` names that stand for several sources.
NAMED_SETS = {"music21": MUSIC21_SOURCES, "folk": FOLK_SOURCES}
# Note values each style is read at. The renaissance corpora are written in the old long values (a beat
# of a half note: their notes move 1.55 beats apart on average, the chorales' 0.63), so they are read at
# half their written values, as modern editions print them: a beat then means the same pace in every
# style, and a network that leans into the style it learnt most of does not slow into half notes.
NOTE_VALUES = {"renaissance": 0.5}


# -- sources ---------------------------------------------------------------------------------------
def corpus_works(source: str) -> list[str]:
    """music21 corpus work names for `chorales` (the 371 Bach chorales) or `corpus:<composer>`."""
    corpus = music21_module("corpus")
    if source == "chorales":
        return list(corpus.chorales.Iterator(returnType="filename"))
    composer = source.split(":", 1)[1]
    paths = [p for p in corpus.getComposer(composer) if p.suffix.lower() in SCORE_SUFFIXES]
    if not paths:
        raise BadData(f"music21's corpus has no scores for {composer!r}")
    return [str(p) for p in paths]


def load_pieces(source: str = DEFAULT_DATA, limit: int | None = None, workers: int = 2) -> list[Piece]:
    """Pieces of a data source: `chorales`, `corpus:<composer>`, `folk:<collection>`, a folder (or file) of
    scores, `music21` (the chorales and music21's other polyphonic corpora), `folk` (a share of music21's
    folk collections) or several sources joined by `+`. A source `bot/music/sources.py` does not allow
    is a `BadData`.

    Parsed pieces are cached as JSON keyed by the source, so a second run starts at once. Each piece's
    meta holds its `style` (the token it opens with), its `source` and its estimated `key`.
    """
    sources = expand(source)
    for part, _ in sources:
        check_trainable(thinned(part)[0])
    if sources != [(source, 1)] or thinned(source)[1] > 1:  # a set, a share or several: part by part
        out: list[Piece] = []
        for part, every in sources:
            name, thin = thinned(part)
            try:
                out += _load_one(name, None, workers, every)[::thin]
            except BadData as e:  # a corpus this music21 does not bundle: train on the rest
                log.warning("skipping %s: %s", part, e)
        if limit:
            out = out[-limit:]
        if not out:
            raise BadData(f"no usable notes in {source}")
        return out
    return _load_one(source, limit, workers)


def expand(source: str) -> list[tuple[str, int]]:
    """The sources a `--data` value names, each with the share of its items taken (every n-th). A part
    `NAME/N` (a registered source or a named set, not a folder) keeps every N-th piece of what NAME reads,
    and each of its sources carries the `/N`."""
    out: list[tuple[str, int]] = []
    for part in source.split("+") if "+" in source else [source]:
        name, thin = thinned(part)
        suffix = f"/{thin}" if thin > 1 else ""
        out += [(s + suffix, every) for s, every in NAMED_SETS.get(name, [(name, 1)])]
    return out


def thinned(part: str) -> tuple[str, int]:
    """A `--data` part and the share of its pieces kept: `folk/4` is (`folk`, 4), a folder is itself."""
    name, _, n = part.rpartition("/")
    if name and n.isdigit() and int(n) > 0 and (name in NAMED_SETS or not is_folder(name)):
        return name, int(n)
    return part, 1


def _load_one(source: str, limit: int | None, workers: int, every: int = 1) -> list[Piece]:
    if source.startswith("folk:"):
        from bot.music.folk import load_folk

        return _finish(load_folk(source, every, workers, files=limit)[:limit], source)
    if source == "lieder":
        from bot.music.lieder import load_lieder

        return _finish(load_lieder()[::every][:limit], source)
    if source == "chorales" or source.startswith("corpus:"):
        items = corpus_works(source)
        parse = parse_corpus_work
        stamp = {name: "corpus" for name in items}
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise BadData(f"no such data folder: {source}")
        files = (
            [root]
            if root.is_file()
            else sorted(
                p
                for p in root.rglob("*")
                if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES | SCORE_SUFFIXES
            )
        )
        if not files:
            raise BadData(f"no MIDI or score files in {source}")
        items = [str(p) for p in files]
        parse = None
        stamp = {str(p): f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files}
    items = items[::every]
    if limit:
        items = items[:limit]

    key = hashlib.sha1(source.encode()).hexdigest()[:12]
    cache_path = cache_dir() / f"pieces-{key}-v{CACHE_VERSION}.json"  # versions never overwrite each other
    cached = load_cache(cache_path)
    pieces: dict[str, Piece | None] = {}
    todo = []
    for item in items:
        entry = cached.get(item)
        if entry is not None and entry.get("stamp") == stamp[item]:
            pieces[item] = piece_from_json(entry["piece"]) if entry.get("piece") else None
        else:
            todo.append(item)
    if todo:
        log.info("parsing %d scores from %s", len(todo), source)
        with parse_pool(workers) as pool:
            if parse is not None:
                for item, piece in zip(todo, pool.map(parse, todo, chunksize=8)):
                    pieces[item] = piece
            else:
                for item, piece, why in pool.map(read_or_none, todo, chunksize=4):
                    if piece is None:
                        log.warning("skipping %s: %s", item, why)
                    pieces[item] = piece
        for item in todo:
            p = pieces[item]
            cached[item] = {"stamp": stamp[item], "piece": piece_to_json(p) if p else None}
        save_cache(cache_path, cached)
    return _finish([p for item in items if (p := pieces.get(item)) is not None and p.events], source)


def _finish(usable: list[Piece], source: str) -> list[Piece]:
    """Pieces of one source read at their style's note values, with style, source and key in meta."""
    if not usable:
        raise BadData(f"no usable notes in {source}")
    style = entry(source).style
    scale = NOTE_VALUES.get(style, 1.0)
    for p in usable:
        p.name = Path(p.name).stem if "/" in p.name or "\\" in p.name else p.name
        if scale != 1.0:
            p.events = [replace(e, onset=e.onset * scale, duration=e.duration * scale) for e in p.events]
            p.tempo *= scale  # the same music in the same time: a half note at 60 is a quarter at 60
            if p.meta.get("meter"):  # and its bars: 4/2 read at half values is 4/4
                n, d, downbeat = p.meta["meter"]
                p.meta["meter"] = [n, min(32, round(d / scale)), downbeat * scale]
        key = estimate_key(p.events)
        p.meta.update(style=style, source=source, key=key.name if key else None)
    return usable


# -- split and windows -----------------------------------------------------------------------------
def is_validation(name: str) -> bool:
    return zlib.crc32(name.encode()) % VALIDATION_SHARE == 0


def split_by_piece(pieces: Sequence[Piece]) -> tuple[list[Piece], list[Piece]]:
    """Training and validation pieces; a piece's windows never land on both sides.

    The choice hangs on the piece's name alone, so it is stable when pieces are added. A tiny data set
    still gets one validation piece and keeps at least one for training.
    """
    # With the chorales among other music, validation is the chorales' own held-out pieces alone, the
    # same ones whatever else is added.
    chorales_too = (
        any(p.meta.get("style") == "chorale" for p in pieces)
        and len({p.meta.get("style") for p in pieces}) > 1
    )
    held = [is_validation(p.name) and (not chorales_too or p.meta.get("style") == "chorale") for p in pieces]
    train = [p for p, h in zip(pieces, held) if not h]
    val = [p for p, h in zip(pieces, held) if h]
    if not val and len(train) > 1:
        val = [train.pop(min(range(len(train)), key=lambda i: zlib.crc32(train[i].name.encode())))]
    if not train:
        raise BadData("need at least two pieces to hold one out for validation")
    return train, val


class Chorale(NamedTuple):
    """A four-part chorale: its name, its [soprano, alto, tenor, bass] events, and the score's meter (its
    time signature and where its bars start, in the events' times; None when it has no time signature)."""

    name: str
    parts: list[list[Event]]
    meter: Meter | None


def chorale_parts(validation: bool = True, limit: int | None = None) -> list[Chorale]:
    """The four-part chorales on one side of the split.

    Names are those `load_pieces` gives, so the split is the one the model was trained with. Parsed
    parts are cached as JSON beside the corpus cache.
    """
    path = cache_dir() / PARTS_CACHE
    cached = load_cache(path)
    out, changed = [], False
    for work in corpus_works("chorales"):
        name = Path(work).stem
        if is_validation(name) != validation:
            continue
        if name not in cached:
            corpus = music21_module("corpus")
            score = corpus.parse(work)
            pieces = [piece_from_stream(p, name) for p in score.parts]
            cached[name] = {
                "parts": [[[e.onset, e.duration, list(e.pitches)] for e in p.events] for p in pieces],
                "meter": pieces[0].meta.get("meter") if pieces else None,
            }
            changed = True
        saved = cached[name]
        parts = [[Event(on, du, tuple(ps)) for on, du, ps in part] for part in saved["parts"]]
        if len(parts) == 4 and all(parts):
            meter = Meter.from_json(saved["meter"]) if saved["meter"] else None
            out.append(Chorale(name, parts, meter))
        if limit and len(out) >= limit:
            break
    if changed:
        save_cache(path, cached)
    return out


def to_reference_key(piece: Piece) -> tuple[list[Event], str | None]:
    """A piece's events moved to C major or A minor (by at most a tritone), and its mode."""
    from bot.music.keys import Key

    if not piece.meta.get("key"):
        return list(piece.events), None
    key = Key.parse(piece.meta["key"])
    return transpose(piece.events, key.to_reference()), key.mode


def encode_piece(piece: Piece, vocab: Vocabulary, normalize_key: bool = True) -> np.ndarray:
    """A whole piece as the network learns it: head (start, style, mode), frames, `<end>`."""
    events, mode = to_reference_key(piece) if normalize_key else (piece.events, None)
    head = vocab.head(mode, piece.meta.get("style", "other"))
    return np.asarray(vocab.encode_frames(events, head)[0], dtype=np.int32)


KEY_MODES = {
    "reference": "every piece moved to C major or A minor (by at most a tritone), a mode token after <start>",
    "transpose": "pieces in their own keys, each window moved by a random -6..+5 semitones every epoch",
}


def token_data(
    data: str, limit: int | None = None, keys: str = "reference", vocab: Vocabulary | None = None
) -> tuple[Vocabulary, list, list, list[np.ndarray], list[np.ndarray]]:
    """The vocabulary, training and validation pieces and their token streams (one per piece, whole,
    from `<start>` to `<end>`) for a data source: what `etude train` learns and what a tokens file holds.
    """
    if keys not in KEY_MODES:
        raise BadData(f"keys must be one of {', '.join(KEY_MODES)}")
    pieces = load_pieces(data, limit=limit)
    train_p, val_p = split_by_piece(pieces)
    vocab = vocab or Vocabulary.fit(train_p)
    reference = keys == "reference"
    return (
        vocab,
        train_p,
        val_p,
        encode_pieces(train_p, vocab, reference),
        encode_pieces(val_p, vocab, reference),
    )


def piece_meter(piece: Piece) -> Meter:
    """A training piece's meter: the score's own (`scores.score_meter_of`), a MIDI file's time signatures,
    else what its onsets suggest."""
    if piece.meta.get("meter"):
        return Meter.from_json(piece.meta["meter"])
    return meter_of(piece.events, piece.meta.get("time_signatures", []), piece.meta.get("tempo_changes", 0))


def encode_pieces(pieces: Sequence[Piece], vocab: Vocabulary, normalize_key: bool = True) -> list[np.ndarray]:
    return [encode_piece(p, vocab, normalize_key) for p in pieces]


def windows(seqs: Sequence[np.ndarray], length: int, offset: int = 0) -> np.ndarray:
    """Cut token sequences into windows of `length + 1` tokens (input plus the target shifted by one).

    `offset` moves the cut points so that successive epochs see different windows; short tails are
    padded with `<pad>` (id 0), which the loss ignores.
    """
    out = [
        np.pad(seq[a : b + 1], (0, length + 1 - (b + 1 - a)))
        for seq in seqs
        for a, b in _spans(len(seq), length, offset)
    ]
    return np.stack(out).astype(np.int32) if out else np.zeros((0, length + 1), np.int32)


def window_counts(seqs: Sequence[np.ndarray], length: int, offset: int = 0) -> list[int]:
    """How many of `windows`' rows each sequence gives, in order."""
    return [len(_spans(len(seq), length, offset)) for seq in seqs]


def _spans(n: int, length: int, offset: int) -> list[tuple[int, int]]:
    """The (first, last) token of each window of a sequence of `n` tokens: each target token lands in
    exactly one."""
    first = offset % length if n > length + 1 else 0
    cuts = [0] + list(range(first or length, n - 1, length)) + [n - 1]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def transpose_windows(
    w: np.ndarray, vocab: Vocabulary, rng: np.random.Generator, span: int = 6
) -> np.ndarray:
    """Each window moved by a random interval in [-span, span - 1] semitones (for training without key
    normalisation; pitches that would leave the piano fold back by octaves)."""
    k = np.floor(rng.random(len(w)) * 2 * span).astype(np.int32) - span
    return np.stack([vocab.transpose_ids(row, int(s)) for row, s in zip(w, k)]) if len(w) else w.copy()
