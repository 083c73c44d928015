"""`etude eval --listener`'s printout and the model card's listener section, rendered from what
`bot.eval.discriminate` measured, and registered with `bot.model.card` (which may not import evaluation)
when this module is imported."""

from __future__ import annotations

from bot.eval.discriminate import EXCERPT_BEATS, FOLDS
from bot.model.card import register_section


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def _form_rows(form: dict, cadences: bool = True) -> list[tuple[str, str, str]]:
    real, gen = form["real"], form["generated"]
    r, g = real["phrase_cadences_per_16_beats"], gen["phrase_cadences_per_16_beats"]
    rows = []
    if cadences:
        rows.append(
            (
                "phrase cadences on a beat per 16 beats",
                f"{r['median']:.2f} [{r['p5']:.2f}, {r['p95']:.2f}]" if r.get("n") else "—",
                f"{g['median']:.2f}" if g.get("n") else "—",
            )
        )
    rows.append(
        (
            "a passage of 8 onsets returns within 64 beats",
            f"{real['passage_returns'] * 100:.0f}%",
            f"{gen['passage_returns'] * 100:.0f}%",
        )
    )
    if "repeated_bars" in real:
        r, g = real["repeated_bars"], gen["repeated_bars"]
        rows.append(
            (
                "bars that repeat an earlier bar",
                f"{r['median']:.2f} [{r['p5']:.2f}, {r['p95']:.2f}]" if r.get("n") else "—",
                f"{g['median']:.2f}" if g.get("n") else "—",
            )
        )
    return rows


def _spread_text(d: dict) -> str:
    """The accuracy's spread as the printout and the card say it; nothing for a section from before it."""
    if "accuracy_spread" not in d:
        return ""
    low, high = d["accuracy_spread"]
    return f"; {low * 100:.0f}-{high * 100:.0f}% over sets of the same pieces drawn again, 5th to 95th percentile"


def _spread_aside(d: dict) -> str:
    """The spread as an aside in brackets; nothing where the section has none."""
    return f" ({_spread_text(d)[2:]})" if _spread_text(d) else ""


def listener_table(section: dict) -> str:
    """`etude eval --listener`'s printout."""
    d, s = section["discriminator"], section["samples"]
    lines = [
        f"listener: {s['pieces']} unseeded samples of {s['length']} notes at the defaults (rng seeds "
        f"{s['rng_seeds'][0]}-{s['rng_seeds'][1]}) beside {d['pieces']['real']} validation chorales",
        f"discriminator: {d['accuracy'] * 100:.0f}% balanced accuracy telling {d['excerpts']['generated']} "
        f"sample excerpts from {d['excerpts']['real']} chorale excerpts of {EXCERPT_BEATS} beats "
        f"({d['features']} statistics, logistic regression, {FOLDS}-fold by piece; 50%: cannot tell"
        f"{_spread_text(d)})",
    ]
    lines += _printed_part(d, section["form"], "chorales")
    if section.get("folk"):
        f, d = section["folk"], section["folk"]["discriminator"]
        lines += [
            "",
            f"folk: {_folk_intro(f)}",
            f"discriminator: {d['accuracy'] * 100:.0f}% balanced accuracy telling {d['excerpts']['generated']} "
            f"sample excerpts from {d['excerpts']['real']} tune excerpts{_spread_text(d)}",
        ]
        lines += _printed_part(d, f["form"], "tunes", cadences=False)
    return "\n".join(lines)


def _printed_part(d: dict, form: dict, real: str, cadences: bool = True) -> list[str]:
    """The statistics that tell most and the form table, as the printout shows them."""
    lines = [f"{'what tells them apart most':32} {'weight':>7} {real:>9} {'samples':>9}"]
    lines += [
        f"{t['feature']:32} {t['weight']:>7.2f} {_num(t['real']):>9} {_num(t['generated']):>9}"
        for t in d["telling"]
    ]
    lines += ["", f"{'':46} {real + ': median [5th, 95th]':>28} {'samples':>8}"]
    return lines + [f"{a:46} {b:>28} {c:>8}" for a, b, c in _form_rows(form, cadences)]


def _card_part(d: dict, form: dict, real: str, cadences: bool = True) -> list[str]:
    """The statistics that tell most and the form table, as the card shows them."""
    lines = [f"| statistic | weight (+: samples) | {real} | samples |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {t['feature']} | {t['weight']:.2f} | {_num(t['real'])} | {_num(t['generated'])} |"
        for t in d["telling"]
    ]
    lines += ["", f"| phrases and form | {real}: median [5th, 95th] | samples |", "| --- | --- | --- |"]
    return lines + [f"| {a} | {b} | {c} |" for a, b, c in _form_rows(form, cadences)] + [""]


def _folk_intro(folk: dict) -> str:
    s, d = folk["samples"], folk["discriminator"]
    return (
        f"{s['pieces']} unseeded tunes of {s['length']} notes in the folk style at the defaults (RNG seeds "
        f"{s['rng_seeds'][0]}-{s['rng_seeds'][1]}) beside {d['pieces']['real']} folk tunes no training "
        f"source reads (Ryan's Mammoth Collection, `bot/eval/heldout.py`)"
    )


def card_markdown(section: dict) -> list[str]:
    """The model card's section on telling samples from chorales."""
    d, s = section["discriminator"], section["samples"]
    lines = [
        "## Can a listener tell? (samples beside the validation chorales)",
        "",
        f"{s['pieces']} unseeded samples of {s['length']} notes at the defaults (RNG seeds {s['rng_seeds'][0]}-"
        f"{s['rng_seeds'][1]}) beside {d['pieces']['real']} validation chorales. A logistic regression on "
        f"{d['features']} listener statistics of {EXCERPT_BEATS}-beat excerpts, cross-validated by piece, "
        f"tells them apart **{d['accuracy'] * 100:.0f}%** of the time (balanced accuracy; 50% = cannot tell"
        f"{_spread_text(d)}; `bot/eval/discriminate.py`). What tells them apart most:",
        "",
    ]
    lines += _card_part(d, section["form"], "chorales")
    if section.get("folk"):
        f, d = section["folk"], section["folk"]["discriminator"]
        lines += [
            "### Folk tunes",
            "",
            f"{_folk_intro(f)}. The same classifier tells them apart **{d['accuracy'] * 100:.0f}%** of the "
            f"time{_spread_aside(d)}. "
            "What tells them apart most:",
            "",
        ]
        lines += _card_part(d, f["form"], "tunes", cadences=False)
    return lines


register_section("listener", card_markdown)
