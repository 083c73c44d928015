"""The OpenScore Lieder Corpus: songs for voice and piano, dedicated to the public domain (CC0).

music21 does not bundle these songs. Their MusicXML files (github.com/OpenScore/Lieder, `scores/`, one
folder per song: `<composer>/<set>/<song>/lc<id>.mxl`) are parsed once, by `python -m bot.music.lieder
CHECKOUT`, into `data/openscore-lieder.json.gz`: each song's notes, meter and tempo as the training cache
keeps them (`bot.music.scores.piece_to_json`), named by its folder. `etude train --data lieder` reads that
file, so training needs neither the checkout nor a network.

Every tenth song (by a hash of its name) is held out of training: those songs are where a choice about
these songs may be tuned, and nothing is reported on them that a choice was tuned on. A song that
`bot.eval.heldout` measures with (Lili'uokalani's "Aloha 'Oe" is in both collections) is held out too.
"""

from __future__ import annotations

import gzip
import json
import logging
import sys
import zlib
from pathlib import Path

from bot.errors import BadData
from bot.music.events import Piece
from bot.music.scores import parse_pool, piece_from_json, piece_to_json, read_or_none

log = logging.getLogger(__name__)

DATA_FILE = Path(__file__).resolve().parents[2] / "data" / "openscore-lieder.json.gz"
HOME = "https://github.com/OpenScore/Lieder"
HELD_OUT_SHARE = 10  # one song in ten by name is never trained on
# Songs measured with elsewhere, by their folder (`bot.eval.heldout` reads music21's copy).
MEASURED_ELSEWHERE = ("Liliuokalani,_Queen_of_the_Hawaiian_Islands/_/Aloha_Oe",)


def song_name(relative: Path) -> str:
    """A song's name: its folder under `scores/`, `composer/set/song` (`_` for a song in no set)."""
    return relative.parent.as_posix()


def is_held_out(name: str) -> bool:
    """Whether a song is kept out of training: one in `HELD_OUT_SHARE` by name, and those measured with."""
    return name in MEASURED_ELSEWHERE or zlib.crc32(name.encode()) % HELD_OUT_SHARE == 0


def build(checkout: Path, out: Path = DATA_FILE, workers: int = 2) -> dict:
    """Parse every song of a checkout of the corpus into `out`; the songs music21 could not read are
    named in the file and left out. Returns the file's contents."""
    scores = checkout / "scores"
    files = sorted(scores.rglob("*.mxl"))
    if not files:
        raise BadData(f"{checkout} holds no scores/*/…/*.mxl: is it a checkout of {HOME}?")
    songs, skipped = {}, {}
    with parse_pool(workers) as pool:
        for path, piece, why in pool.map(read_or_none, [str(f) for f in files], chunksize=4):
            name = song_name(Path(path).relative_to(scores))
            if piece is None or not piece.events:
                skipped[name] = why or "no notes"
                continue
            piece.name = name
            songs[name] = piece_to_json(piece)
    data = {"source": HOME, "licence": "CC0 1.0", "songs": songs, "skipped": skipped}
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
    return data


def load_lieder(held_out: bool = False, path: Path = DATA_FILE) -> list[Piece]:
    """The songs training reads (or, with `held_out`, the ones it never reads), in name order."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            songs = json.load(f)["songs"]
    except (OSError, ValueError, KeyError) as e:
        raise BadData(f"cannot read the Lieder songs in {path} ({e}): see bot/music/lieder.py") from None
    pieces = [piece_from_json(songs[n]) for n in sorted(songs) if is_held_out(n) == held_out]
    for p in pieces:  # one name per song, with no path separator for the loader to cut at
        p.name = "lieder: " + p.name.replace("/", " | ")
    return pieces


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bot.music.lieder CHECKOUT (a clone of https://github.com/OpenScore/Lieder)")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = build(Path(argv[0]))
    print(f"{len(data['songs'])} songs written to {DATA_FILE}; {len(data['skipped'])} could not be read")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
