"""`etude eval`: how good a model is, measured (bits per note, the samples' music, harmony, seed fidelity, a listener).

Importing the package registers the card's sections that evaluation measures and renders (seed fidelity,
the listener) with `bot.model.card`, so any path that stores one, every one of which imports `bot.eval`,
writes a README that shows them.
"""

from bot.eval import fidelity, listener_card  # noqa: F401  (registers their card sections)
