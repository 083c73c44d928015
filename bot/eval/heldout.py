"""Pieces held out of every training set, for `etude eval --fidelity`, and the validation chorales.

Every piece here is bundled with music21 and read from its corpus, so nothing is copied into this
repository. music21's corpus notice (`music21/corpus/license.txt`) says its encodings are distributed
with the encoders' permission, some with restrictions on commercial use, and points to each file's own
terms; the terms found in each file are listed beside it in `HELD_OUT`. They are used here to measure a
model, not to train one or to ship.

A piece is held out when no `etude train --data music21+folk+lieder` source reads it: Palestrina, whom no
source reads (his encoder reserves derivative formats: bot/music/sources.py), composers no source names
(Lusitano, the `luca` Gloria, Beethoven, whose quartets `music21` leaves out), the piano works and the
songs. A file whose terms reserve its rights (Berlin's "Alexander's Ragtime Band" lead sheet) or leave
them blank (Schubert's "Der Lindenbaum") is left out. `check_held_out` holds the list to that whenever
it is loaded, so a training source that grows to take one of them fails loudly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from bot.errors import BadData
from bot.music.corpus import (
    NOTE_VALUES,
    cache_dir,
    corpus_works,
    expand,
    is_validation,
    piece_from_stream,
)
from bot.music.events import Event, Piece

CACHE_FILE = "heldout-v2.json"  # 2: a piece keeps its meter


@dataclass(frozen=True)
class HeldOut:
    """One held-out piece: music21 work, the style it stands for (`piano` for music the model never
    heard the like of) and the terms stated in the file."""

    work: str
    style: str
    terms: str


_NO_TERMS = "no terms in the file; music21's corpus notice applies"
_KERN = "KernScores encoding (Craig Stuart Sapp); no terms in the file; music21's corpus notice applies"
_RYAN = "Ryan's Mammoth Collection (1883), public domain; ABC transcription stating no restriction"
HELD_OUT: tuple[HeldOut, ...] = (
    # Renaissance polyphony: Palestrina, whom no source trains on, and two composers no source reads.
    HeldOut("palestrina/Agnus_00.krn", "renaissance", "Copyright 2000 John Miller (encoding), in music21"),
    HeldOut("palestrina/Agnus_01.krn", "renaissance", "Copyright 2000 John Miller (encoding), in music21"),
    HeldOut("lusitano/allor_che_ignuda.mxl", "renaissance", "CC0 / public domain (M. S. A. Cuthbert, 2022)"),
    HeldOut("luca/gloria.xml", "renaissance", _NO_TERMS),
    # Classical: Beethoven's string quartets, which `--data music21` leaves out.
    HeldOut("beethoven/opus18no1/movement2.mxl", "classical", _KERN),
    HeldOut("beethoven/opus18no1/movement3.mxl", "classical", _KERN),
    # Solo piano music, which no source holds (the songs of `--data lieder` have a piano beside a voice).
    HeldOut("bach/bwv846.mxl", "piano", _NO_TERMS),
    HeldOut("joplin/maple_leaf_rag.mxl", "piano", _NO_TERMS),
    HeldOut("chopin/mazurka06-2.krn", "piano", _KERN),
    HeldOut("schumann_clara/polonaise_op1n1.mxl", "piano", _NO_TERMS),
    HeldOut("schumann_clara/polonaise_op1n2.mxl", "piano", _NO_TERMS),
    HeldOut("schumann_clara/polonaise_op1n3.mxl", "piano", _NO_TERMS),
    HeldOut("schumann_clara/polonaise_op1n4.mxl", "piano", _NO_TERMS),
    HeldOut("cpebach/h186.mxl", "piano", _NO_TERMS),
    # Songs, melody-led, on an eighth-note grid (every piano work above moves in sixteenths somewhere);
    # `bot.music.lieder` keeps its copy of Aloha 'Oe out of training.
    HeldOut(
        "beach/prayer_of_a_tired_child.musicxml", "song", "original out of copyright (1915, G. Schirmer)"
    ),
    HeldOut("liliuokalani/aloha_oe.mxl", "song", "public domain; encoding CC0 (M. S. A. Cuthbert)"),
    HeldOut("johnson_j_r/lift_every_voice.mxl", "song", "public domain; encoding CC0 (M. S. A. Cuthbert)"),
    HeldOut("leadSheet/fosterBrownHair.mxl", "song", "public domain (stated in the file)"),
    # Folk tunes: files of Ryan's Mammoth Collection that `--data folk` does not read (it reads every 4th).
    HeldOut("ryansMammoth/AWillieWeHaveMissdYouStrathspey.abc", "folk", _RYAN),
    HeldOut("ryansMammoth/AcrobatsHornpipe.abc", "folk", _RYAN),
    HeldOut("ryansMammoth/AdmiralsHornpipe.abc", "folk", _RYAN),
    HeldOut("ryansMammoth/AlhambraReel.abc", "folk", _RYAN),
)
STYLE_NOTE_VALUES = {"renaissance": NOTE_VALUES.get("renaissance", 1.0)}  # read as training reads them


def _to_json(p: Piece) -> dict:
    return {
        "name": p.name,
        "tempo": p.tempo,
        "events": [[e.onset, e.duration, list(e.pitches)] for e in p.events],
        "meter": p.meta.get("meter"),
    }


def _from_json(d: dict) -> Piece:
    piece = Piece(d["name"], [Event(on, du, tuple(ps)) for on, du, ps in d["events"]], d["tempo"])
    if d.get("meter"):
        piece.meta["meter"] = list(d["meter"])
    return piece


def _cached_parse(works: list[str]) -> dict[str, Piece]:
    """music21 works parsed once and kept as JSON in the cache folder (a first parse takes seconds each)."""
    path = cache_dir() / CACHE_FILE
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    todo = [w for w in works if w not in cached]
    if todo:
        from music21 import corpus

        for w in todo:
            cached[w] = _to_json(piece_from_stream(corpus.parse(w), w))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cached))
        tmp.replace(path)
    return {w: _from_json(cached[w]) for w in works}


def _relative(path: str) -> str:
    """A music21 corpus path as `composer/work` (what `corpus.parse` takes)."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("corpus") + 1 :]) if "corpus" in parts else path


def training_works() -> set[str]:
    """Every music21 work `etude train --data music21+folk` reads, as `composer/work` paths."""
    from bot.music.folk import folk_files

    works: set[str] = set()
    for source, every in expand("music21+folk"):
        read = folk_files(source) if source.startswith("folk:") else corpus_works(source)
        works |= {_relative(w) for w in read[::every]}
    return works


def check_held_out(chosen: list[HeldOut]) -> None:
    """Fail when a held-out piece is one the training data reads."""
    trained = training_works()
    clash = [h.work for h in chosen if h.work in trained]
    if clash:
        raise BadData(f"held-out pieces that training reads: {', '.join(clash)}")


def held_out_pieces(per_style: int | None = None) -> list[Piece]:
    """The held-out pieces (at most `per_style` of each style), each with its `style` and `terms` in meta."""
    chosen, seen = [], {}
    for h in HELD_OUT:
        seen[h.style] = seen.get(h.style, 0) + 1
        if per_style is None or seen[h.style] <= per_style:
            chosen.append(h)
    check_held_out(chosen)
    parsed = _cached_parse([h.work for h in chosen])
    out = []
    for h in chosen:
        p = parsed[h.work]
        scale = STYLE_NOTE_VALUES.get(h.style, 1.0)
        if scale != 1.0:
            p.events = [replace(e, onset=e.onset * scale, duration=e.duration * scale) for e in p.events]
        p.meta.update(style=h.style, terms=h.terms, work=h.work)
        out.append(p)
    return out


# Folk tunes the listener section's folk samples are heard beside: Ryan's Mammoth files no source reads and
# `HELD_OUT` does not list, every seventh from the fifth (those from the second were the ones the plan of
# a tune's phrases was chosen on: `bot.model.form`).
LISTENER_TUNES, TUNES_FROM, TUNES_EVERY = 30, 4, 7


def listener_tunes(count: int = LISTENER_TUNES) -> list[Piece]:
    """`count` held-out folk tunes with their meters, each with `style` and `terms` in meta."""
    from bot.music.folk import folk_files

    listed = {h.work for h in HELD_OUT}
    trained = training_works()
    free = [w for w in folk_files("folk:ryansMammoth") if w not in trained and w not in listed]
    works = free[TUNES_FROM::TUNES_EVERY][:count]
    parsed = _cached_parse(works)
    for w in works:
        parsed[w].meta.update(style="folk", terms=_RYAN, work=w)
    return [parsed[w] for w in works]


def validation_chorales(limit: int | None = None) -> list[Piece]:
    """The chorales every model here stops its training on (never trained on), by name, at most `limit`."""
    works = [w for w in corpus_works("chorales") if is_validation(Path(w).stem)]
    works = sorted(set(works), key=lambda w: Path(w).name)  # the iterator lists a few chorales twice
    parsed = _cached_parse([_relative(w) for w in works])
    out = []
    for w in works:
        p = parsed[_relative(w)]
        p.name = Path(w).name  # bwv153.1: the split goes by the stem (bwv153), as training's does
        p.meta.update(style="chorale", work=_relative(w))
        out.append(p)
    return out[:limit]
