"""`etude eval --fidelity` and `--listener` on a model: the runs behind `bot.eval.fidelity` and
`bot.eval.discriminate`, which measure and print but never load a model themselves."""

from __future__ import annotations

import time

from bot.eval import discriminate as D
from bot.eval import fidelity as F
from bot.eval.heldout import LISTENER_TUNES, held_out_pieces, listener_tunes, validation_chorales
from bot.model import network as M
from bot.model.card import store_section
from bot.model.composer import Composer
from bot.model.styles import offered_styles
from bot.music.corpus import piece_meter
from bot.options import Options


def fidelity_pieces(quick: bool = False) -> tuple[list, list]:
    """The pieces cut into seeds (validation chorales, then held-out pieces of every style and piano music)
    and the validation chorales the chorale excerpts come from."""
    chorales = validation_chorales()
    n_chorales = F.QUICK_CHORALE_SEEDS if quick else F.CHORALE_SEEDS
    return chorales[:n_chorales] + held_out_pieces(F.QUICK_PER_STYLE if quick else None), chorales


def evaluate_fidelity(model_dir: str | None = None, quick: bool = False, write_card: bool = False) -> dict:
    """The seed-fidelity section of `etude eval`: held-out pieces of every trained style and piano music,
    and validation chorales as the chorale style's seeds (with `quick`, a few of each)."""
    m = M.load(model_dir)
    pieces, chorales = fidelity_pieces(quick)
    result = {"model": m.name, "fidelity": F.fidelity_section(Composer(m), pieces, chorales)}
    if write_card:
        store_section(m.path, "fidelity", result["fidelity"])
    return result


def evaluate_methods(model_dir: str | None = None, quick: bool = False) -> dict:
    """Seed fidelity of each way to listen to the seed (`bot.eval.methods`), on the fidelity section's
    seeds."""
    from bot.eval.methods import methods_section

    m = M.load(model_dir)
    pieces, chorales = fidelity_pieces(quick)
    return {"model": m.name, "methods": methods_section(Composer(m), pieces, chorales)}


def _heard(composer: Composer, real: list, length: int, pieces: int, style: str | None = None) -> dict:
    """`pieces` unseeded samples of `length` notes at the defaults (in `style`) beside the `real` pieces:
    the discriminator and the form, each piece's bars read from its meter."""
    jobs = [(Options(length=length, rng_seed=D.RNG_SEED + i, style=style), None) for i in range(pieces)]
    done = composer.compose(jobs)
    samples, events = [c.events for c in done], [p.events for p in real]
    return {
        "samples": {"pieces": pieces, "length": length, "rng_seeds": [D.RNG_SEED, D.RNG_SEED + pieces - 1]},
        "discriminator": D.discriminate(events, samples),
        "form": D.form_section(events, samples, ([piece_meter(p) for p in real], [c.meter for c in done])),
    }


def evaluate_listener(model_dir: str | None = None, quick: bool = False, write_card: bool = False) -> dict:
    """Unseeded samples at the defaults beside the validation chorales: the discriminator and the form;
    for a model that offers the folk style, its tunes beside held-out folk tunes as well (a single line
    closes no chord cadences, so passages that return and bars that repeat tell its form)."""
    t0 = time.monotonic()
    m = M.load(model_dir)
    composer = Composer(m)
    pieces, length = (D.QUICK_PIECES, D.QUICK_LENGTH) if quick else (D.PIECES, D.LENGTH)
    section = {**_heard(composer, validation_chorales(), length, pieces), "seconds": 0.0}
    if "folk" in offered_styles(m):
        length = D.QUICK_FOLK_LENGTH if quick else D.FOLK_LENGTH
        tunes = listener_tunes(D.QUICK_TUNES if quick else LISTENER_TUNES)
        section["folk"] = _heard(composer, tunes, length, pieces, "folk")
    section["seconds"] = round(time.monotonic() - t0, 1)
    if write_card:
        store_section(m.path, "listener", section)
    return {"model": m.name, "listener": section}
