"""Where model folders live, and a model's card read without loading the network (for `/help`).

A model folder's card is `card.json` (what training and `etude eval` measured, one section each) and a
`README.md` that says the same in words; `bot.model.card` builds, renders and writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = REPO_MODELS / "etude-chorales"


def load_card(folder: str | Path | None = None) -> dict:
    """A model's card without loading the network; empty when there is none."""
    path = Path(folder or DEFAULT_MODEL) / "card.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
