"""`etude compose` checks where it writes and what it reads before it samples anything."""

from __future__ import annotations

import os

import pytest
from test_compose import etude, one_error_line
from test_midi import melody, note, smf
from test_startup import assert_one_error, broken_models

from bot.errors import BadSeed
from bot.music.midi import SeedLimits, read_midi

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize(
    "make_out,expect",
    [
        (lambda tmp: tmp / "a-file", "is not a folder"),
        (lambda tmp: "/dev/null", "is not a folder"),
        (lambda tmp: tmp / "a-file" / "below", "cannot be written"),
        (lambda tmp: tmp / ("x" * 300), "cannot be written"),
        (lambda tmp: "", "--out is empty"),
    ],
)
def test_out_is_checked_before_sampling(tmp_path, make_out, expect):
    (tmp_path / "a-file").write_text("not a folder")
    line = one_error_line(etude("compose", "--length", "5", "--out", str(make_out(tmp_path)), timeout=120))
    assert expect in line
    assert not list(tmp_path.glob("*.mid"))


def test_seed_must_be_a_regular_file_and_not_empty(tmp_path):
    fifo = tmp_path / "pipe.mid"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    assert "not a regular file" in one_error_line(
        etude("compose", "--seed", str(fifo), "--out", str(tmp_path))
    )
    assert "--seed is empty" in one_error_line(etude("compose", "--seed", "", "--out", str(tmp_path)))


def test_a_seed_without_usable_notes_says_why():
    late = smf([note(60, 96, rest=96 * 40) + melody(4)])  # 96 ticks a beat at 120 bpm: starts at 20 s
    with pytest.raises(BadSeed, match="starts after its first 10 s"):
        read_midi(late, "late", SeedLimits(max_seconds=10))
    drums = smf([b"".join(note(36 + i % 10, 48, channel=9) for i in range(20))])
    with pytest.raises(BadSeed, match="only drum notes"):
        read_midi(drums, "drums")


def test_the_cli_refuses_a_broken_model_in_one_line(tiny_model_dir, tmp_path, capsys):
    from bot.cli import main

    for name, folder in broken_models(tiny_model_dir, tmp_path).items():
        code = main(["compose", "--model", str(folder), "--length", "5", "--out", str(tmp_path)])
        err = capsys.readouterr().err
        assert_one_error(code, err, "cannot be loaded")
        assert len(err.strip().splitlines()) == 1, (name, err)


def test_a_fifo_melody_is_refused_not_waited_on(tmp_path, capsys):
    from bot.cli import main

    fifo = tmp_path / "tune.mid"
    os.mkfifo(fifo)
    code = main(["harmonize", "--melody", str(fifo), "--out", str(tmp_path)])
    assert_one_error(code, capsys.readouterr().err, "not a regular file")


def test_a_long_path_in_an_error_keeps_its_file_name():
    from bot.paths import shown

    long = "/srv/" + "deep/" * 30 + "my-soundfont.sf2"
    assert len(shown(long)) == 80 and shown(long).endswith("/my-soundfont.sf2")
    assert shown("/short/path.mid") == "/short/path.mid"
    assert len(shown("/x/" + "a" * 300)) <= 80
