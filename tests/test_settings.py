"""Settings and the bot's start-up errors, without Discord."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.settings import Settings


def test_every_setting_is_documented_in_env_example():
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")
    }
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_bot_without_a_token_is_one_error_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bot", "bot"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DISCORD_TOKEN": ""},
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: DISCORD_TOKEN is not set: put the bot's token in the environment or .env"
    ]


def test_empty_values_in_env_mean_unset(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DISCORD_GUILD_ID=\nREDIS_URL=\nQUEUE_MAX=7\n")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.discord_guild_id is None and s.redis_url is None and s.queue_max == 7
