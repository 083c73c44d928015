"""Every source `etude train` can read, with where it comes from and its terms as read in its files.

This is the one place that says whether a source may be trained on. `load_pieces` refuses a source
whose entry says no (and one with no entry at all), and the model card lists each source a model learnt
from with its entry (`card_sources`), so a model never ships without saying what it heard and under
which terms.

music21's corpus notice (`music21/corpus/license.txt`) says its encodings are distributed with the
encoders' permission, that some carry restrictions on commercial use, and that each file's or folder's
own terms apply: those are what the entries below quote. The original tutorial's MIDI files
(arrangements of copyrighted game music, with no licence) are no source here: neither train nor tune on
them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from bot.errors import BadData


@dataclass(frozen=True)
class Source:
    """One training source: `name` as `--data` spells it, its style token, where it comes from, the
    terms found in its files, whether it may be trained on and why."""

    name: str
    style: str
    origin: str
    terms: str
    trainable: bool
    decision: str


_M21 = "music21's bundled corpus (music21/corpus/{}), read offline"
_KERN = "KernScores (CCARH) Humdrum encoding converted to MusicXML; no terms in the files"
_PD_WORK = "the music is in the public domain"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "chorales",
            "chorale",
            _M21.format("bach"),
            "371 chorale harmonizations by J. S. Bach (d. 1750); MusicXML encodings whose only mark is "
            "'PDF ©2004 Margaret Greentree' on the engraving; no licence terms in the files",
            True,
            f"{_PD_WORK}; the encodings are distributed by music21 with the encoders' permission and state "
            "no restriction",
        ),
        Source(
            "corpus:palestrina",
            "renaissance",
            _M21.format("palestrina"),
            "every file's header: 'Copyright 2000, John Miller'; 'This file must be accompanied by the "
            "licensing agreement'; 'Rights to all derivative electronic formats reserved'; the agreement is "
            "at music-cog.ohio-state.edu and is not bundled with music21",
            False,
            "the encoder reserves every derivative electronic format (a trained network is "
            "one) under an agreement that cannot be read offline; used only to measure (bot/eval/heldout.py)",
        ),
        Source(
            "corpus:monteverdi",
            "renaissance",
            _M21.format("monteverdi"),
            "madrigals of books 3-5 (Monteverdi, d. 1643) as MusicXML; no terms in the files",
            True,
            f"{_PD_WORK}; the encodings state no restriction; music21's notice applies",
        ),
        Source(
            "corpus:josquin",
            "renaissance",
            _M21.format("josquin"),
            "ABC encodings headed 'Copyright (C) 1999 Laura E. Conrad', under the GNU GPL version 2 or later",
            True,
            f"{_PD_WORK}; the encoding's GPL allows any use, its notice kept here and on the card",
        ),
        Source(
            "corpus:haydn",
            "classical",
            _M21.format("haydn"),
            f"string quartets op. 1 no. 1 and op. 74 no. 1; {_KERN}",
            True,
            f"{_PD_WORK}; the encodings state no restriction; music21's notice applies",
        ),
        Source(
            "corpus:mozart",
            "classical",
            _M21.format("mozart"),
            f"string quartets K. 80, 155, 156, 458 and the K. 545 exposition; {_KERN}",
            True,
            f"{_PD_WORK}; the encodings state no restriction; music21's notice applies",
        ),
        Source(
            "corpus:beethoven",
            "classical",
            _M21.format("beethoven"),
            f"string quartets; {_KERN}",
            True,
            f"{_PD_WORK}; the encodings state no restriction; `--data music21` leaves them out for their "
            "texture, and two movements are held out to measure (bot/eval/heldout.py)",
        ),
        Source(
            "folk:oneills1850",
            "folk",
            _M21.format("oneills1850"),
            "O'Neill's Music of Ireland (1903, 1,850 melodies) as ABC; each tune names its transcriber "
            "(Z: Norbert Paap, John Chambers, Henrik Norbeck, ...); no licence terms in the files",
            True,
            "published 1903, in the public domain; transcriptions shared on the ABC lists and distributed "
            "by music21 with their permission, stating no restriction; transcribers credited by name here",
        ),
        Source(
            "folk:ryansMammoth",
            "folk",
            _M21.format("ryansMammoth"),
            "Ryan's Mammoth Collection (Boston, 1883) as ABC, 'Contributed by Ray Davies' and others (Z:); "
            "no licence terms in the files",
            True,
            "published 1883, in the public domain; the transcriptions state no restriction and are "
            "distributed by music21 with their permission",
        ),
        Source(
            "folk:airdsAirs",
            "folk",
            _M21.format("airdsAirs"),
            "James Aird, A Selection of Scotch, English, Irish and Foreign Airs (Glasgow, 1778-1803) as "
            "ABC, 'Z:Jack Campin * www.campin.me.uk * 2009'; no licence terms in the files",
            True,
            "published 1778-1803, in the public domain; the transcription states no restriction and is "
            "distributed by music21 with its author's permission; credited here",
        ),
        Source(
            "lieder",
            "classical",
            "the OpenScore Lieder Corpus (github.com/OpenScore/Lieder, commit bca1224), 19th-century songs "
            "for voice and piano transcribed by volunteers, parsed into data/openscore-lieder.json.gz",
            "the OpenScore Lieder Corpus's LICENSE.txt: CC0 1.0 Universal (a public domain dedication) for "
            "every score in it",
            True,
            "dedicated to the public domain (CC0), the music itself out of copyright; the corpus is credited "
            "here. Its songs are art music of the concert repertoire, learnt under the `classical` token "
            "with the quartets; one song in ten, and Aloha 'Oe, are held out (bot/music/lieder.py)",
        ),
        Source(
            "corpus:essenFolksong",
            "folk",
            _M21.format("essenFolksong"),
            "essenFolksong/license.txt: the legal status of the Essen database is unclear; Ewa Dahlig-Turek "
            "'has given permission for non-commercial distribution and use of these files in music21'",
            False,
            "the permission is for non-commercial use inside music21 only, and a model that ships is neither",
        ),
        Source(
            "folder",
            "other",
            "a folder of the user's own .mid or score files (`etude train --data PATH`)",
            "the user's own files: their terms are the user's to check",
            True,
            "trained on at the user's word; the card names the folder. The original tutorial's MIDI files "
            "(arrangements of copyrighted game music, no licence) must not be among them",
        ),
    )
}
# `corpus:bach` reads the same chorales under another name.
ALIASES = {"corpus:bach": "chorales"}
# A style's `--data` name with the sources it stands for and the share of each one's items it takes.
FOLK_SOURCES = (("folk:oneills1850", 4), ("folk:ryansMammoth", 4), ("folk:airdsAirs", 6))


def is_folder(name: str) -> bool:
    """Whether a `--data` part names a path rather than a registered corpus."""
    return not (name.startswith(("corpus:", "folk:")) or name in SOURCES or name in ALIASES)


def entry(name: str) -> Source:
    """The registry's entry for one source; a source without one is a `BadData`."""
    if is_folder(name):
        return SOURCES["folder"]
    found = SOURCES.get(ALIASES.get(name, name))
    if found is None:
        raise BadData(f"{name} has no licence entry in bot/music/sources.py: check its terms and add one")
    return found


def check_trainable(name: str) -> Source:
    """The entry of a source that may be trained on; any other is a `BadData` that says why."""
    found = entry(name)
    if not found.trainable:
        raise BadData(f"{name} is not trained on: {found.decision}")
    return found


def card_sources(counts: dict[str, int | None]) -> list[dict]:
    """The card's table of sources: each source a model learnt from, its pieces and its entry.

    `counts` maps each source name to its training pieces (None when a tokens file did not keep them).
    A source without an entry, or one not to be trained on, stops the card.
    """
    if not counts:
        raise BadData("the model's card needs the sources it was trained on")
    rows = []
    for name, pieces in counts.items():
        found = check_trainable(name)
        row = {"source": name, "pieces": pieces, **asdict(found)}
        row.pop("name")
        if found.name == "folder":
            row["origin"] = f"{Path(name).name or name}: {found.origin}"
        rows.append(row)
    return rows


def sources_markdown(rows: list[dict]) -> list[str]:
    """The card's data and licence table, for its README."""
    lines = [
        "| source | style | pieces | terms as read in the files | decision |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        pieces = "?" if r.get("pieces") is None else f"{r['pieces']:,}"
        lines.append(f"| `{r['source']}` | {r['style']} | {pieces} | {r['terms']} | {r['decision']} |")
    refused = [s for s in SOURCES.values() if not s.trainable]
    lines += ["", "Not trained on: " + "; ".join(f"`{s.name}`: {s.decision}" for s in refused) + "."]
    return lines + [""]
