"""Where model folders live and their cards, readable without loading the network (the chat layer's view)."""

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
