"""`etude eval --fidelity` and `--listener` on a model: the runs behind `bot.eval.fidelity` and
`bot.eval.discriminate`, which measure and print but never load a model themselves."""

from __future__ import annotations

import time

from bot.eval import discriminate as D
from bot.eval import fidelity as F
from bot.eval.heldout import held_out_pieces, validation_chorales
from bot.model import network as M
from bot.model.card import store_section
from bot.model.composer import Composer
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


def evaluate_listener(model_dir: str | None = None, quick: bool = False, write_card: bool = False) -> dict:
    """Unseeded samples at the defaults beside the validation chorales: the discriminator and the form."""
    t0 = time.monotonic()
    m = M.load(model_dir)
    pieces, length = (D.QUICK_PIECES, D.QUICK_LENGTH) if quick else (D.PIECES, D.LENGTH)
    chorales = [p.events for p in validation_chorales()]
    done = Composer(m).compose(
        [(Options(length=length, rng_seed=D.RNG_SEED + i), None) for i in range(pieces)]
    )
    samples = [c.events for c in done]
    section = {
        "samples": {"pieces": pieces, "length": length, "rng_seeds": [D.RNG_SEED, D.RNG_SEED + pieces - 1]},
        "discriminator": D.discriminate(chorales, samples),
        "form": D.form_section(chorales, samples),
        "seconds": 0.0,
    }
    section["seconds"] = round(time.monotonic() - t0, 1)
    if write_card:
        store_section(m.path, "listener", section)
    return {"model": m.name, "listener": section}
