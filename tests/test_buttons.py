"""The state a piece's buttons carry in their custom ids, apart from the network."""

from __future__ import annotations

from bot.chat import buttons
from bot.options import Options


def test_button_ids_carry_the_options_within_discords_limit():
    opts = Options(
        length=2000, temperature=1.25, top_p=0.9, tempo=240, instrument=127, rng_seed=5, key="F# minor"
    )
    for action in ("reroll", "continue"):
        cid = buttons.button_id(action, opts, "0123456789abcdef")
        assert len(cid) <= 100
        match = buttons.CUSTOM_ID.fullmatch(cid)
        back, seed = buttons.options_from_id(match)
        assert (back.length, back.temperature, back.top_p, back.tempo, back.instrument) == (
            2000,
            1.25,
            0.9,
            240,
            127,
        )
        assert seed == "0123456789abcdef" and back.rng_seed is None  # a re-roll draws a new seed
        assert back.key == "F# minor"  # ...in the key that was asked for
    plain = buttons.options_from_id(buttons.CUSTOM_ID.fullmatch(buttons.button_id("reroll", Options(), None)))
    assert plain[1] is None and plain[0].key is None
    # A button from before keys were an option still works.
    old = "etude:reroll:500:1:0.95:0:0:-"
    assert buttons.options_from_id(buttons.CUSTOM_ID.fullmatch(old))[0] == Options()
