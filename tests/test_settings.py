"""Settings and the bot's start-up errors, without Discord."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from bot.settings import Environment, Settings


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


# Passed on to a child process, not read as a setting: a render process must import this same package.
PASSED_ON = ("PYTHONPATH",)


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read a variable from the environment: os.environ[...], os.environ.get, os.getenv."""
    lines = []
    for node in ast.walk(tree):
        text = ast.unparse(node) if isinstance(node, ast.Call | ast.Subscript) else ""
        if any(f"'{name}'" in text for name in PASSED_ON):
            continue
        if isinstance(node, ast.Call) and text.startswith(("os.environ.get(", "os.getenv(", "environ.get(")):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and text.startswith("os.environ[")
        ):
            lines.append(node.lineno)
    return lines


def test_settings_is_the_one_reader_of_the_environment():
    package = Path(__file__).parent.parent / "bot"
    readers = {
        str(path.relative_to(package.parent)): found
        for path in package.rglob("*.py")
        if path.name != "settings.py" and (found := _environment_reads(ast.parse(path.read_text())))
    }
    assert readers == {}


def test_backend_and_cache_folder_come_from_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("KERAS_BACKEND", "ETUDE_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("KERAS_BACKEND=jax\nXDG_CACHE_HOME=/somewhere\n")
    env = Environment()
    assert env.keras_backend == "jax" and env.cache_folder == Path("/somewhere/etude")
    monkeypatch.setenv("ETUDE_CACHE", str(tmp_path / "c"))
    assert Environment().cache_folder == tmp_path / "c"
    # The backend a process runs is the setting's, written where Keras reads it before Keras loads.
    code = "from bot.model import backend; import os; print(backend.name(), os.environ['KERAS_BACKEND'])"
    env_vars = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env_vars["PYTHONPATH"] = str(Path(__file__).parent.parent)
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env_vars
    )
    assert r.stdout.split() == ["jax", "jax"], r.stderr
