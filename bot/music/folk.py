"""music21's folk-tune collections: ABC files of one tune or of many (an opus), each tune a piece.

A first parse costs about 0.35 s of one core per tune (O'Neill's 50-tune files take 16 s each), so
`--data folk` reads a share of each collection (`FOLK_SOURCES`) and caches the tunes as JSON.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from bot.errors import BadData
from bot.music.events import Piece
from bot.music.scores import (
    cache_dir,
    load_cache,
    parse_pool,
    piece_from_json,
    piece_from_stream,
    piece_to_json,
    save_cache,
)

log = logging.getLogger(__name__)


def folk_files(source: str) -> list[str]:
    """The ABC files of `folk:<collection>`, as `collection/file` names `corpus.parse` takes, sorted."""
    import music21

    collection = source.split(":", 1)[1]
    folder = Path(music21.__file__).parent / "corpus" / collection
    files = sorted(p.name for p in folder.glob("*.abc")) if folder.is_dir() else []
    if not files:
        raise BadData(f"music21's corpus has no folk collection {collection!r}")
    return [f"{collection}/{name}" for name in files]


def _tune_name(work: str, number: str | None, index: int) -> str:
    """A name unique across collections (the split by piece hashes it): collection, file, tune number."""
    collection, file = work.split("/", 1)
    tag = re.sub(r"[^A-Za-z0-9]+", "", str(number or index))
    return f"{collection}-{Path(file).stem}-{tag}"


def parse_folk_file(work: str) -> list[Piece]:
    """Every tune of one ABC file (one score or an opus of many)."""
    from music21 import corpus

    parsed = corpus.parse(work)
    scores = list(parsed.scores) if hasattr(parsed, "scores") else [parsed]
    out = []
    for i, score in enumerate(scores):
        number = score.metadata.number if score.metadata else None
        try:
            piece = piece_from_stream(score, _tune_name(work, number, i))
        except Exception as e:  # one malformed tune must not lose the rest of its book
            log.warning("skipping tune %s of %s: %s", number or i, work, e)
            continue
        if piece.events:
            out.append(piece)
    return out


def load_folk(source: str, every: int = 1, workers: int = 2, files: int | None = None) -> list[Piece]:
    """The tunes of every `every`-th file of a folk collection (the first `files` of those), parsed once
    and cached as JSON."""
    chosen = folk_files(source)[::every][:files]
    key = hashlib.sha1(source.encode()).hexdigest()[:12]
    path = cache_dir() / f"folk-{key}.json"
    cached = load_cache(path)
    todo = [f for f in chosen if f not in cached]
    if todo:
        log.info("parsing %d ABC files from %s", len(todo), source)
        with parse_pool(workers) as pool:
            for work, tunes in zip(todo, pool.map(parse_folk_file, todo)):
                cached[work] = [piece_to_json(p) for p in tunes]
        save_cache(path, cached)
    return [piece_from_json(d) for f in chosen for d in cached[f]]
