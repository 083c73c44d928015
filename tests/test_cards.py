"""The model card: read, written, one section replaced, and rendered as the folder's README.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bot.eval  # noqa: F401  (registers the card's sections that evaluation renders)
from bot.cards import DEFAULT_MODEL, load_card
from bot.model.card import MEASURED_ELSEWHERE, card_markdown, register_section, store_section, write_card

CARDS = Path(__file__).resolve().parent / "cards"


def test_the_shipped_readme_is_its_card_rendered():
    shipped = (DEFAULT_MODEL / "README.md").read_text()
    assert card_markdown(load_card(DEFAULT_MODEL)) == shipped


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda folder, card: write_card(folder, card), id="training writes the card"),
        *(
            pytest.param(
                lambda folder, card, s=section: store_section(folder, s, card[s]),
                id=f"--write-card {section}",
            )
            for section in ("evaluation", "music", "fidelity", "listener", "previous", "sweep")
        ),
    ],
)
def test_a_rewritten_card_reads_as_it_did_before_evaluation_moved(tmp_path, rewrite):
    """A card with every section (seed fidelity, listener, the model it replaces), rendered before the
    fidelity and listener modules moved out of the model layer (`tests/cards/`, the measuring modules'
    paths updated), rewritten by each path that writes a card: the same README, to the byte."""
    card = json.loads((CARDS / "etude-chorales.json").read_text())
    assert all(card.get(s) for s in (*MEASURED_ELSEWHERE, "previous"))
    shutil.copy(CARDS / "etude-chorales.json", tmp_path / "card.json")
    rewrite(tmp_path, card)
    expected = (CARDS / "etude-chorales.md").read_text()
    assert (tmp_path / "README.md").read_text() == expected
    assert "## Seed fidelity" in expected and "## Can a listener tell?" in expected
    assert "## Beside the model it replaces" in expected


CARD_ALONE = """
import json, sys
from bot.model.card import card_markdown
card = json.loads(open(sys.argv[1]).read())
try:
    card_markdown(card)
except RuntimeError as e:
    print(e)
import bot.eval.heldout  # any evaluation module: the package registers the sections as it loads
print(sum(line.startswith("## ") for line in card_markdown(card).splitlines()))
"""


def test_a_section_without_its_renderer_is_an_error_and_any_evaluation_import_registers_it():
    """In a fresh interpreter the model layer alone cannot render evaluation's sections, and says so
    rather than dropping them; importing anything of `bot.eval` makes them render."""
    out = subprocess.run(
        [sys.executable, "-c", CARD_ALONE, str(CARDS / "etude-chorales.json")],
        cwd=CARDS.parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == "the card's 'fidelity' section has no renderer: import bot.eval, which registers it"
    headings = (CARDS / "etude-chorales.md").read_text().count("\n## ")
    assert out[1] == str(headings)


def test_a_section_the_card_has_no_place_for_is_refused():
    with pytest.raises(ValueError, match="no place for a section 'harmony'"):
        register_section("harmony", lambda section: [])


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
