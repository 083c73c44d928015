"""The package's imports run one way, a folder per program and per stage: chat → queue → music on the bot's
side; worker → queue, model, render → music in the worker; eval → model and bench → worker for the
measuring commands; no cycles; the bot's side never reaches the worker or the model, and the model never
reaches evaluation."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bot"

# Which layers each layer may import (directly, at any depth inside functions too).
ALLOWED = {
    "chat": {"chat", "queue", "music", "top"},
    "queue": {"queue", "music", "top"},
    "worker": {"worker", "queue", "model", "render", "music", "top"},
    "model": {"model", "music", "top"},
    "eval": {"eval", "model", "music", "top"},
    "bench": {"bench", "worker", "queue", "model", "render", "music", "top"},
    "render": {"render", "music", "top"},
    "music": {"music", "top"},
    "top": {"top", "chat", "queue", "worker", "model", "eval", "bench", "render", "music"},
}
TOP_LEAVES = {
    "bot.aio",
    "bot.options",
    "bot.errors",
    "bot.settings",
    "bot.cards",
}  # shared by every layer; they import no layer


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


TOP_PACKAGES = {"cli"}  # folders that belong to the top layer: the command line, a module per command


def layer(module: str) -> str:
    """The folder a module lives in (`bot.worker.batcher` → worker, `bot.bench` → bench), else top."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] not in TOP_PACKAGES and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "top"


def imports() -> dict[str, set[str]]:
    """Every module of `bot` and the `bot` modules it imports anywhere in its body."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("bot"):
                    targets.add(node.module)
                    for alias in node.names:  # `from bot.model import network`
                        if (
                            PACKAGE / node.module.removeprefix("bot.").replace(".", "/") / alias.name
                        ).exists():
                            targets.add(f"{node.module}.{alias.name}")
                        elif (
                            PACKAGE / f"{node.module.removeprefix('bot.').replace('.', '/')}/{alias.name}.py"
                        ).exists():
                            targets.add(f"{node.module}.{alias.name}")
            elif isinstance(node, ast.ImportFrom) and node.level:
                pytest.fail(f"{name}: use absolute imports (bot.…), found a relative one")
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("bot")}
        found[name] = targets - {name}
    return found


def test_no_module_imports_one_that_imports_it_back():
    graph = imports()
    cycles = [module for module in graph if module in reach(graph, module)]
    assert not cycles, f"import cycles through: {sorted(cycles)}"


def test_layers_import_one_way():
    wrong = []
    for module, targets in imports().items():
        for target in targets:
            if target in TOP_LEAVES or target == "bot":
                continue
            if layer(target) not in ALLOWED[layer(module)]:
                wrong.append(f"{module} → {target}")
    assert not wrong, "\n".join(sorted(wrong))


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def reached_from(start: str, forbidden: set[str]) -> list[str]:
    """`module → target` for every module of layer `start` that reaches one of the `forbidden` layers."""
    graph = imports()
    return sorted(
        f"{m} → {t}" for m in graph if layer(m) == start for t in reach(graph, m) if layer(t) in forbidden
    )


def test_chat_reaches_neither_the_worker_nor_the_model():
    """The bot's side gets an embedded worker handed in (`bot.queue.interfaces.LocalWorker`), so no import
    of chat, however deep or late, loads the worker's runtime, the model, evaluation or the benchmarks."""
    wrong = reached_from("chat", {"worker", "model", "eval", "bench"})
    assert not wrong, "\n".join(wrong)


def test_the_model_reaches_no_evaluation():
    """The model layer holds no evaluation and never loads it, however deep or late, through a top-level
    module either: the card's sections measured by evaluation are registered with it by `bot.eval`."""
    wrong = reached_from("model", {"eval", "bench", "worker", "chat", "queue"})
    assert not wrong, "\n".join(wrong)


def test_the_queue_is_the_bots_side_only():
    """The queue holds what the bot needs; only the worker imports the model and the renderer."""
    wrong = reached_from("queue", {"worker", "model", "render", "eval", "bench"})
    assert not wrong, "\n".join(wrong)


def test_top_leaves_import_no_layer_above_music():
    graph = imports()
    for leaf in TOP_LEAVES:
        assert all(layer(t) in {"top", "music"} for t in graph[leaf]), (leaf, graph[leaf])


def test_bot_in_redis_mode_loads_neither_tensorflow_nor_the_sampler():
    """What `etude bot` imports to run in Redis mode: the client, its cog, the Redis queue, the command."""
    code = (
        "import sys\n"
        "import bot.chat.client, bot.chat.commands, bot.chat.reply, bot.queue.scheduler\n"
        "import bot.queue.redis_state, bot.queue.streams, bot.queue.results, bot.queue.runtime, bot.cli.serve\n"
        "heavy = ('tensorflow', 'keras', 'jax', 'bot.worker.worker', 'bot.model.sample', 'bot.model.network')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"loaded: {out.stdout.strip()}"


NO_MUSIC21 = """
import sys
sys.modules["music21"] = None  # as if the `train` extra were not installed: importing it raises ImportError
import bot.cli, bot.chat.client, bot.chat.commands, bot.chat.harmonize, bot.worker.worker
import bot.queue.streams, bot.queue.redis_state, bot.model.composer, bot.model.harmonize, bot.render.pool
from bot.cli import main
assert main(["compose", "--length", "8", "--rng-seed", "1", "--out", sys.argv[1]]) == 0
assert main(["train", "--data", "chorales", "--out", sys.argv[1] + "/model"]) == 2
"""


def test_bot_worker_and_compose_run_without_music21(tmp_path):
    """Only training and evaluation need music21 (the `train` extra); without it they say so in one line."""
    r = subprocess.run(
        [sys.executable, "-c", NO_MUSIC21, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "error: music21 is not installed: pip install -e '.[train]' (scripts/setup.sh does)"
    )
    assert sorted(p.suffix for p in tmp_path.glob("etude-1.*")) == [".mid", ".ogg", ".png", ".wav"]
