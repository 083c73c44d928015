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
from bot.music.meter import Meter
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


def _meter(piece) -> Meter | None:
    return Meter.from_json(piece.meta["meter"]) if piece.meta.get("meter") else None


def evaluate_listener(model_dir: str | None = None, quick: bool = False, write_card: bool = False) -> dict:
    """Unseeded samples at the defaults beside the validation chorales: the discriminator and the form;
    for a model that offers the folk style, its tunes beside held-out folk tunes as well."""
    t0 = time.monotonic()
    m = M.load(model_dir)
    composer = Composer(m)
    pieces, length = (D.QUICK_PIECES, D.QUICK_LENGTH) if quick else (D.PIECES, D.LENGTH)
    chorales = validation_chorales()
    jobs = [(Options(length=length, rng_seed=D.RNG_SEED + i), None) for i in range(pieces)]
    done = composer.compose(jobs)
    samples = [c.events for c in done]
    section = {
        "samples": {"pieces": pieces, "length": length, "rng_seeds": [D.RNG_SEED, D.RNG_SEED + pieces - 1]},
        "discriminator": D.discriminate([p.events for p in chorales], samples),
        "form": D.form_section(
            [p.events for p in chorales], samples, ([_meter(p) for p in chorales], [c.meter for c in done])
        ),
        "seconds": 0.0,
    }
    if "folk" in offered_styles(m):
        section["folk"] = folk_listener(composer, quick)
    section["seconds"] = round(time.monotonic() - t0, 1)
    if write_card:
        store_section(m.path, "listener", section)
    return {"model": m.name, "listener": section}


def folk_listener(composer: Composer, quick: bool = False) -> dict:
    """Unseeded tunes in the folk style beside folk tunes no training source reads: the discriminator,
    passages that return and bars that repeat (a single line closes no chord cadences to count)."""
    pieces, length = (D.QUICK_PIECES, D.QUICK_FOLK_LENGTH) if quick else (D.PIECES, D.FOLK_LENGTH)
    tunes = listener_tunes(D.QUICK_TUNES if quick else LISTENER_TUNES)
    jobs = [(Options(length=length, rng_seed=D.RNG_SEED + i, style="folk"), None) for i in range(pieces)]
    done = composer.compose(jobs)
    samples = [c.events for c in done]
    real = [p.events for p in tunes]
    return {
        "samples": {"pieces": pieces, "length": length, "rng_seeds": [D.RNG_SEED, D.RNG_SEED + pieces - 1]},
        "discriminator": D.discriminate(real, samples),
        "form": D.form_section(real, samples, ([_meter(p) for p in tunes], [c.meter for c in done])),
    }
