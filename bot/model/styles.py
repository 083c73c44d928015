"""The style a piece is written in: the one asked for, the one that fits the seed best, or the default.

A style is a token after `<start>` (`bot.music.encoding`); the network learnt each with the pieces that
opened with it (`card.json`: `data.styles`). A style the main network heard too faintly to write can have
a network of its own beside it (`<model>/styles/<style>/`, a model folder of the same vocabulary): the
shipped model's folk tunes are written so, when asked for. The style that fits a seed best is the one of
the main network's offered styles under which it finds the seed's own tokens likeliest: one pass over
the primer, one row per style.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from itertools import groupby

import numpy as np

from bot.errors import BadOption, ModelNotFound
from bot.model.network import LoadedModel, load
from bot.model.steps import NumpySteps
from bot.music.events import Event
from bot.music.meter import Meter
from bot.options import STYLES

# A seed of one line, a tune (at most `ONE_LINE` notes per onset), is written in the style whose network
# learnt tunes, when the model has one, unless a style is asked for: on 18 single-line tunes no run reads
# (Ryan's, the tuning tunes of `bot.model.form`), each cut into a seed and its real next part, the folk
# network's continuations were closer to their seeds than the main network's under the style that fits
# best (mean fidelity 1.14 against 1.04, over three sets of RNG seeds; `bot.eval.fidelity`).
LINE_STYLE, ONE_LINE = "folk", 1.1
# Styles whose own network is fitted to a seed by likelihood beside the main network's styles. The
# classical network learnt all the main network's music and the songs for voice and piano besides
# (`bot.music.lieder`), so where it finds a seed likelier, it is mostly the songs' texture it knows: it was
# likelier for all of 19 songs held out of training, for 3 of 12 validation chorales no section reports
# and for 2 of 11 quartet movements; it continued those 19 songs closer to their seeds (mean fidelity
# 0.87 against 0.71, `bot.eval.fidelity`). The folk network is not fitted so (it found piano pieces and a
# chorale likelier than the main network did): a seed's texture sends it a tune (`LINE_STYLE`).
FITTED_NETWORK_STYLES = ("classical",)


def is_one_line(events: Sequence[Event], held_past: float = 0.125) -> bool:
    """Whether the music is a single line: on average at most `ONE_LINE` notes sound at each onset, the
    notes struck there and those still held from before (past `held_past` beats, so a slightly legato
    performance is still one line, and a broken chord whose notes are held is not)."""
    ends: list[tuple[float, int]] = []  # (end, notes) of the events sounding, a heap
    sounding = total = onsets = 0
    for onset, group in groupby(
        sorted((e for e in events if e.pitches), key=lambda e: e.onset), lambda e: e.onset
    ):
        while ends and ends[0][0] <= onset + held_past:
            sounding -= heapq.heappop(ends)[1]
        for e in group:
            heapq.heappush(ends, (e.onset + e.duration, len(e.pitches)))
            sounding += len(e.pitches)
        total, onsets = total + sounding, onsets + 1
    return onsets > 0 and total / onsets <= ONE_LINE


def known_styles(model: LoadedModel) -> tuple[str, ...]:
    """The styles the model learnt, most pieces first; empty when its card does not say."""
    counts = (model.card.get("data") or {}).get("styles") or {}
    return tuple(s for s in sorted(counts, key=lambda s: -counts[s]) if s in model.vocab.styles)


STYLE_NETWORKS = "styles"  # the subfolder of a model folder that holds a network per style


def style_network_names(model: LoadedModel) -> tuple[str, ...]:
    """The offered styles (`bot.options.STYLES`) that a network of their own writes beside `model`
    (`<model>/styles/<style>/`), read from the folder's names alone."""
    folder = model.path / STYLE_NETWORKS
    names = {sub.name for sub in folder.iterdir() if sub.is_dir()} if folder.is_dir() else set()
    return tuple(s for s in STYLES if s in names)


def style_network(model: LoadedModel, style: str) -> LoadedModel:
    """The network that writes `style` beside `model`. It must share the model's vocabulary and have
    learnt the style: one that does not is a `ModelNotFound`, as a broken model folder is."""
    folder = model.path / STYLE_NETWORKS / style
    net = load(folder)
    if net.vocab.to_json() != model.vocab.to_json() or style not in known_styles(net):
        raise ModelNotFound(f"{folder} is not a network of {model.name}'s vocabulary that learnt {style}")
    return net


def offered_styles(model: LoadedModel) -> tuple[str, ...]:
    """The styles the model learnt that the bot offers (`bot.options.STYLES`), most pieces first."""
    return tuple(s for s in known_styles(model) if s in STYLES)


def default_style(model: LoadedModel) -> str:
    """Chorale, as the bot always wrote, unless the model never learnt it: then its most common style."""
    known = known_styles(model)
    return "chorale" if not known or "chorale" in known else known[0]


def check_style(model: LoadedModel, style: str) -> None:
    """`BadOption` for a style this model never learnt (an option may list one another model knows)."""
    known = known_styles(model)
    if known and style not in known:
        raise BadOption(
            f"the model {model.name} has not learnt the {style} style; it knows {', '.join(known)}"
        )


def seed_losses(
    model: LoadedModel,
    primer: Sequence[int],
    styles: Sequence[str],
    meter: Meter | None = None,
    start: int | None = None,
) -> dict[str, float]:
    """Mean negative log-likelihood (nats per token) of the primer's frames under each style's token.

    `primer` opens with `<start>`, a style and a mode (`Vocabulary.head`); the style is swapped per row
    and the loss counted from the first token after the head, which every row shares. The network is
    stepped in NumPy (`NumpySteps`), a row per style: a few small matrix products a token, far cheaper
    than a framework's call on a whole sequence. A network told the meter hears the seed's (`start`: where
    in its bar the primer's time begins).
    """
    steps = NumpySteps(model, k=len(styles), meter=meter, start=start)
    rows = np.arange(len(styles))
    steps.start(primer[:1])
    steps.feed(np.array([model.vocab.style_id(s) for s in styles]), rows)
    logp = steps.feed(np.full(len(styles), primer[2]), rows)
    total = np.zeros(len(styles))
    for token in primer[3:]:
        total -= logp[:, token]
        logp = steps.feed(np.full(len(styles), token), rows)
    return {style: float(t / max(1, len(primer) - 3)) for style, t in zip(styles, total)}
