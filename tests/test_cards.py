"""The model card: read, written, one section replaced, and rendered as the folder's README.md."""

from __future__ import annotations

import json
import shutil

from bot.cards import DEFAULT_MODEL, load_card
from bot.model.card import card_markdown, store_section, write_card


def test_the_shipped_readme_is_its_card_rendered():
    assert card_markdown(load_card(DEFAULT_MODEL)) == (DEFAULT_MODEL / "README.md").read_text()


def test_a_section_is_replaced_and_the_rest_kept(tmp_path):
    shutil.copy(DEFAULT_MODEL / "card.json", tmp_path / "card.json")
    before = load_card(tmp_path)
    store_section(tmp_path, "listening_note", "Played at the default tempo.")
    after = json.loads((tmp_path / "card.json").read_text())
    assert after == {**before, "listening_note": "Played at the default tempo."}
    readme = (tmp_path / "README.md").read_text()
    assert "## Listening note\n\nPlayed at the default tempo." in readme and "## Music" in readme


def test_a_folder_without_a_card_reads_empty_and_gets_one(tmp_path):
    assert load_card(tmp_path) == {}
    write_card(tmp_path, {"name": "tiny"})
    assert load_card(tmp_path) == {"name": "tiny"}
    assert (tmp_path / "README.md").read_text().startswith("# tiny\n")


def test_the_card_shows_the_model_it_replaces(tmp_path):
    """`etude eval --previous OLD --write-card`: the old model's headline figures beside the new one's,
    a dash where either card lacks a figure."""
    import pytest

    from bot.errors import ModelNotFound
    from bot.model.card import HEADLINES, store_previous

    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        folder.mkdir()
    old_card = load_card(DEFAULT_MODEL)
    write_card(old, {**old_card, "name": "old-model"})
    write_card(new, {"name": "new-model", "parameters": 1234, "evaluation": old_card["evaluation"]})
    store_previous(new, old)
    card = load_card(new)
    assert card["previous"]["name"] == "old-model"
    readme = (new / "README.md").read_text()
    assert "| figure | old-model | this model |" in readme
    bits = f"{old_card['evaluation']['model']['nll_bits_per_note']:.2f}"
    assert f"| bits per note, validation chorales | {bits} | {bits} |" in readme
    assert "| parameters | " + f"{old_card['parameters']:,} | 1,234 |" in readme
    # The new card has no listener section yet: its column says so rather than guessing.
    assert "| discriminator, unseeded (50%: cannot tell) | " in readme and readme.count(" — |") >= 1
    assert len([line for line in readme.splitlines() if line.startswith("| ")]) >= len(HEADLINES)
    with pytest.raises(ModelNotFound, match="no model card"):
        store_previous(new, tmp_path / "nowhere")
