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
