"""What the bot says, apart from the network."""

from __future__ import annotations

from bot.chat import reply
from bot.queue.jobs import JobResult


def test_progress_lines():
    assert reply.progress_line({"stage": "queued", "place": 1}) == "🎼 Queued: you're next."
    assert reply.progress_line({"stage": "queued", "place": 4}) == "🎼 Queued: 3 pieces ahead of yours."
    assert reply.progress_line({"stage": "rendering", "percent": 60}) == "🎹 Rendering audio… 60%"


def test_result_embed_names_everything_a_listener_asks():
    result = JobResult(
        "j",
        True,
        info={
            "name": "etude-7",
            "length": 500,
            "seconds": 181.0,
            "key": "D minor (the seed's key)",
            "tempo": 90,
            "temperature": 1.0,
            "instrument": 19,
            "rng_seed": 7,
            "model": "etude-chorales",
            "seed_name": "my*song",
            "note": "mono",
        },
    )
    embed = reply.result_embed(result, "<@42>").to_dict()
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Length"] == "500 notes and chords · 181 s" and fields["Instrument"] == "organ"
    assert fields["Key"] == "D minor (the seed's key)"
    assert fields["RNG seed"] == "`7`" and fields["Model"] == "etude-chorales"
    assert "<@42>" in embed["description"] and "my\\*song" in embed["description"]
    assert embed["footer"]["text"] == "mono"


def test_help_summarises_the_model_card():
    card = {
        "name": "m",
        "summary": "an LSTM",
        "data": {"train_pieces": 325, "source": "chorales"},
        "evaluation": {
            "model": {"nll_bits_per_note": 7.45},
            "baselines": {"ngram": {"nll_bits_per_note": 10.24}, "unigram": {"nll_bits_per_note": 19.9}},
        },
    }
    text = str(reply.help_embed(card, 1200, 2 * 1024 * 1024).to_dict())
    assert "1 to 1200" in text and "2 MiB" in text
    assert "7.45 bits per note" in text and "10.24 for the best baseline (ngram)" in text


def test_seed_store_round_trip(tmp_path):
    store = reply.SeedStore(tmp_path)
    key = store.put(b"MThd seed")
    assert store.get(key) == b"MThd seed" and store.put(b"MThd seed") == key
    assert store.get("../../etc/passwd") is None and store.get("0" * 16) is None


def test_a_folded_melody_is_named_in_the_reply():
    info = {"kind": "harmonize", "seed_name": "theme", "length": 33, "said": ["17 notes moved by an octave"]}
    embed = reply.result_embed(JobResult("j", True, info=info), "<@42>").to_dict()
    assert embed["description"].endswith("as a four-part chorale. 17 notes moved by an octave.")
