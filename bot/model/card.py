"""The model card, built and written in one place: `card.json` (what training and `etude eval` measured,
one section each) and a `README.md` that says the same in words, every section rendered here.

Training writes the first card (`bot.model.network.save`), `etude eval --write-card` replaces its sections
(`store_section`); `bot.cards.load_card` reads it back.

Two sections are measured by evaluation, which the model layer may not import: seed fidelity
(`bot.eval.fidelity`) and the listener (`bot.eval.discriminate`). Their markdown belongs beside what
measures them, so each registers its renderer here (`register_section`) when `bot.eval` is imported, and
the README keeps them in the place `MEASURED_ELSEWHERE` gives them. Every path that stores such a section
runs inside `bot.eval` (or after importing it), and a card holding one whose renderer was not registered
raises rather than losing the section from its README.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bot.cards import load_card
from bot.errors import ModelNotFound
from bot.music.sources import sources_markdown

SectionRenderer = Callable[[dict], list[str]]
# Sections measured by `bot.eval` and rendered by it, in their order in the README (after the music).
MEASURED_ELSEWHERE = ("fidelity", "listener")
_renderers: dict[str, SectionRenderer] = {}


def register_section(name: str, render: SectionRenderer) -> None:
    """Let the card render its section `name` (one of `MEASURED_ELSEWHERE`) with `render`."""
    if name not in MEASURED_ELSEWHERE:
        raise ValueError(f"the card has no place for a section {name!r}: add it to MEASURED_ELSEWHERE")
    _renderers[name] = render


def _measured_elsewhere(card: dict) -> list[str]:
    lines = []
    for name in MEASURED_ELSEWHERE:
        if not card.get(name):
            continue
        if name not in _renderers:
            raise RuntimeError(
                f"the card's {name!r} section has no renderer: import bot.eval, which registers it"
            )
        lines += _renderers[name](card[name])
    return lines


def write_card(folder: str | Path, card: dict) -> None:
    """`card.json` and a README.md that says the same in words."""
    folder = Path(folder)
    (folder / "card.json").write_text(json.dumps(card, indent=1))
    (folder / "README.md").write_text(card_markdown(card))


def store_section(folder: str | Path, section: str, value: dict) -> None:
    """One section of a model's card replaced, the rest as written now (the loss part may just have been)."""
    card = load_card(folder)
    card[section] = value
    write_card(folder, card)


_DATA_LINES = (
    ("train_onsets", "onsets (notes and chords) for training"),
    ("train_tokens", "tokens for training"),
    ("val_onsets", "onsets for validation"),
    ("styles", "training pieces by style token"),
    ("keys", "keys"),
    ("regularization", "regularization"),
)


def card_markdown(card: dict) -> str:
    """The card as the README.md of its model folder."""
    data = card.get("data", {})
    train = card.get("training", {})
    lines = [f"# {card.get('name', 'model')}", "", card.get("summary", ""), "", "## Data", ""]
    lines += [
        f"- source: {data.get('source', '?')}",
        f"- pieces: {data.get('train_pieces', '?')} for training, {data.get('val_pieces', '?')} "
        "for validation (split by piece)",
        f"- augmentation: {data.get('augmentation', 'none')}",
    ]
    lines += [f"- {label}: {data[key]}" for key, label in _DATA_LINES if data.get(key)]
    lines.append("")
    if data.get("sources"):
        lines += ["### Sources and licences", ""] + sources_markdown(data["sources"])
    if card.get("encoding"):
        lines += ["## Encoding", "", card["encoding"], ""]
    lines += [
        "## Network",
        "",
        f"- preset: {card.get('config', {}).get('preset', '?')}",
        f"- parameters: {card.get('parameters', '?'):,}"
        if isinstance(card.get("parameters"), int)
        else "- parameters: ?",
        f"- vocabulary: {card.get('vocab_size', '?')} tokens",
        "",
    ]
    lines += [
        "## Training",
        "",
        f"- time: {train.get('seconds', 0) / 60:.1f} minutes, "
        f"{train.get('epochs', '?')} epochs, on {train.get('machine', '?')}",
        f"- best validation loss: {train.get('best_val_loss', '?')} nats per token (192-token windows)"
        + (f", from {train['best_weights']}" if train.get("best_weights") else ""),
    ]
    lines += [f"- {key}: {train[key]}" for key in ("command", "note") if train.get(key)]
    lines.append("")
    ev = card.get("evaluation")
    if ev:
        lines += [
            "## Evaluation (validation pieces)",
            "",
            "| model | bits per note | token accuracy | notes scored |",
            "| --- | --- | --- | --- |",
        ]
        rows = [("this model", ev["model"])] + list(ev.get("baselines", {}).items())
        for name, r in rows:
            lines.append(f"| {name} | {r['nll_bits_per_note']:.2f} | {r['accuracy']:.3f} | {r['notes']} |")
        lines += [
            "",
            "Bits per note: the negative log-likelihood of whole validation pieces, summed over the tokens "
            "of each note or chord. The n-gram is an interpolated Kneser-Ney model fitted on the same "
            "training pieces and transpositions.",
        ]
        tut = ev.get("baselines", {}).get("tutorial")
        if tut and "model_on_same_notes" in tut:
            lines.append(
                f"The tutorial network needs a 100-token pass per token, so it is scored on the first "
                f"{tut['notes']} validation notes; this model scores {tut['model_on_same_notes']:.2f} "
                "bits per note on those same notes."
            )
        if "improvement_over_best_baseline" in ev:
            lines += [
                "",
                f"{ev['improvement_over_best_baseline'] * 100:.1f}% fewer bits per note than the best "
                "baseline.",
            ]
        lines.append("")
    if card.get("music"):
        lines += _music_markdown(card["music"])
    lines += _measured_elsewhere(card)
    if card.get("previous"):
        lines += _previous_markdown(card)
    if card.get("sweep", {}).get("table"):
        lines += [
            "## Sampling defaults",
            "",
            "The defaults of `temperature` and `top_p` are the setting closest to the validation pieces in "
            "this sweep (`etude eval --sweep --quick --write-card`):",
            "",
            "```",
            card["sweep"]["table"],
            "```",
            "",
        ]
    if card.get("listening_note"):
        lines += ["## Listening note", "", card["listening_note"], ""]
    return "\n".join(lines)


def _music_markdown(section: dict) -> list[str]:
    """The model card's musical section: the table, what each figure means, and key fidelity."""
    from bot.music.stats import STATISTICS, fmt, key_fidelity_line  # numpy: only when a card is written

    lines = [
        "## Music (samples beside the validation pieces)",
        "",
        f"{section['pieces']} pieces of {section['length']} notes sampled at temperature "
        f"{section['temperature']:g} and top-p {section['top_p']:g} (RNG seeds {section['rng_seeds'][0]}-"
        f"{section['rng_seeds'][1]}), beside the {section['reference_pieces']} validation pieces; figures "
        "are medians over pieces, [5th, 95th percentile] for the validation pieces, or a share of pieces.",
        "",
        "| what a listener hears | validation pieces | this model |",
        "| --- | --- | --- |",
    ]
    for s in STATISTICS:
        g, r = section["generated"][s.key], section["reference"][s.key]
        lines.append(f"| {s.label} | {fmt(s, r, True)} | {fmt(s, g, False)} |")
    lines += [
        "",
        f"Distance to the validation pieces: {section['distance']:.3f} (the mean gap of a statistic, in "
        "units of the validation pieces' 5th-95th percentile range; 0 when every median sits on theirs). "
        "Each statistic is defined in `bot/music/stats.py`.",
    ]
    for source, key in section.get("key_fidelity", {}).items():
        line = key_fidelity_line(source, key)
        lines += ["", line[0].upper() + line[1:] + "."]
    lines.append("")
    return lines


# -- beside the model it replaces ---------------------------------------------------------------------
def _groups(card: dict) -> dict:
    return card.get("fidelity", {}).get("groups", {})


def _share(card: dict, part: str) -> str:
    """`k of n` summed over the fidelity groups: seeds that kept their grid (`part="grid"`) or key."""
    groups = _groups(card).values()
    n = sum(g.get(f"{part}_seeds", 0) for g in groups)
    return f"{sum(g.get(f'{part}_kept', 0) for g in groups)} of {n}" if n else "—"


HEADLINES = (
    ("bits per note, validation chorales", lambda c: f"{c['evaluation']['model']['nll_bits_per_note']:.2f}"),
    ("seed fidelity, piano", lambda c: f"{_groups(c)['piano']['mean_fidelity']:.2f}"),
    ("seed fidelity, songs", lambda c: f"{_groups(c)['songs']['mean_fidelity']:.2f}"),
    ("seed fidelity, trained styles", lambda c: f"{_groups(c)['trained styles']['mean_fidelity']:.2f}"),
    ("grid-keeping seeds continued on their grid", lambda c: _share(c, "grid")),
    ("continuations within a fifth of the seed's key", lambda c: _share(c, "key")),
    (
        "discriminator, unseeded (50%: cannot tell)",
        lambda c: f"{c['listener']['discriminator']['accuracy']:.0%}",
    ),
    (
        "phrase cadences per 16 beats, unseeded",
        lambda c: f"{c['listener']['form']['generated']['phrase_cadences_per_16_beats']['median']:.2f}",
    ),
    (
        "a passage of 8 onsets returns within 64 beats",
        lambda c: f"{c['listener']['form']['generated']['passage_returns']:.0%}",
    ),
    ("parameters", lambda c: f"{c['parameters']:,}"),
)


def headline(card: dict) -> dict[str, str]:
    """The figures a model is judged by, from its card ("—" where its card lacks one)."""
    out = {}
    for label, read in HEADLINES:
        try:
            out[label] = read(card)
        except (KeyError, TypeError, ValueError):
            out[label] = "—"
    return out


def store_previous(folder: str | Path, previous: str | Path) -> None:
    """Keep the headline figures of the model `folder` replaces (read from its card) in `folder`'s card."""
    if not (Path(previous) / "card.json").is_file():
        raise ModelNotFound(f"no model card in {previous}")
    before = load_card(previous)
    store_section(folder, "previous", {"name": before.get("name") or Path(previous).name, **headline(before)})


def _previous_markdown(card: dict) -> list[str]:
    before, now = card["previous"], headline(card)
    lines = [
        "## Beside the model it replaces",
        "",
        f"| figure | {before.get('name', 'previous')} | this model |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {label} | {before.get(label, '—')} | {now[label]} |" for label, _ in HEADLINES]
    return [*lines, ""]
