"""What the bot says: progress lines, the result embed, the help text. No network here, so it is easy to test."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import discord

from bot.options import PROGRAM_NAMES, SPECS
from bot.queue.jobs import JobResult


def progress_line(event: dict) -> str:
    """One line for the deferred message: the place in the queue, then the stage and percent done."""
    stage = event.get("stage", "queued")
    if stage == "queued":
        place = event.get("place", 0)
        ahead = max(place - 1, 0)
        return "🎼 Queued: " + (
            "you're next." if ahead == 0 else f"{ahead} piece{'s' if ahead != 1 else ''} ahead of yours."
        )
    labels = {
        "started": "Starting",
        "composing": "Composing",
        "rendering": "Rendering audio",
        "uploading": "Uploading",
    }
    return f"🎹 {labels.get(stage, stage.capitalize())}… {event.get('percent', 0)}%"


def result_embed(result: JobResult, user_mention: str) -> discord.Embed:
    info = result.info
    title = info.get("name", "Étude")
    desc = f"Composed for {user_mention}"
    if info.get("kind") == "harmonize":
        melody = discord.utils.escape_markdown(str(info.get("seed_name") or "your melody"))
        desc = f"Harmonized for {user_mention}: **{melody}** as a four-part chorale"
    elif info.get("seed_name"):
        desc += f", continuing **{discord.utils.escape_markdown(str(info['seed_name']))}**"
    desc += "."
    # What the piece assumed or changed beyond the options (a meter the seed did not say, a folded melody).
    for sentence in info.get("said") or []:
        desc += f" {str(sentence)[:1].upper()}{str(sentence)[1:]}."
    embed = discord.Embed(title=title, description=desc, colour=discord.Colour.blurple())
    embed.add_field(
        name="Length", value=f"{info.get('length')} notes and chords · {info.get('seconds', 0):.0f} s"
    )
    embed.add_field(name="Key", value=str(info.get("key", "?")))
    embed.add_field(name="Tempo", value=f"{info.get('tempo')} bpm")
    embed.add_field(name="Temperature", value=f"{info.get('temperature')}")
    embed.add_field(
        name="Instrument",
        value=PROGRAM_NAMES.get(info.get("instrument"), f"program {info.get('instrument')}"),
    )
    embed.add_field(name="RNG seed", value=f"`{info.get('rng_seed')}`")
    embed.add_field(name="Model", value=str(info.get("model", "?")))
    if info.get("note"):  # what was reduced to fit, and which file still holds the whole piece
        embed.set_footer(text=info["note"])
    return embed


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n // 1024} KiB"


def help_embed(card: dict, max_length: int, seed_max_bytes: int) -> discord.Embed:
    embed = discord.Embed(
        title="Étude composes music",
        description=(
            "`/compose` writes a new piece with an LSTM trained on real scores and sends back the `.mid`, "
            "an `.ogg` to listen to, a `.wav` and a piano-roll picture (with `video:True`, also an `.mp4` of "
            "the roll scrolling with the music). Attach a MIDI file as `seed` and it continues your music.\n"
            "🔁 **re-roll** makes another piece with the same options; ➕ **continue** extends a piece.\n"
            "`/harmonize` takes a melody (a MIDI file) and writes alto, tenor and bass under it, keeping "
            "every note of it, as a four-part chorale."
        ),
        colour=discord.Colour.blurple(),
    )
    for name in ("length", "temperature", "top_p", "tempo"):
        spec = SPECS[name]
        hi = max_length if name == "length" else spec.hi
        default = "" if spec.default is None else f" (default {spec.default:g})"
        low = f"more than {spec.lo:g}" if spec.lo_open else f"{spec.lo:g}"
        embed.add_field(name=name, value=f"{spec.help}: {low} to {hi:g}{default}", inline=False)
    embed.add_field(
        name="seed",
        value=f"A MIDI file to continue (up to {_size(seed_max_bytes)}; drums are ignored)",
        inline=False,
    )
    embed.add_field(name="instrument", value="The General MIDI sound to play it with", inline=False)
    embed.add_field(name="rng_seed", value=SPECS["rng_seed"].help, inline=False)
    ev = card.get("evaluation", {})
    data = card.get("data", {})
    lines = [f"**{card.get('name', 'model')}**: {card.get('summary', '')}"]
    if data:
        lines.append(f"Trained on {data.get('train_pieces')} pieces ({data.get('source')}).")
    if ev.get("model"):
        best = min(ev["baselines"].items(), key=lambda kv: kv[1]["nll_bits_per_note"])
        lines.append(
            f"{ev['model']['nll_bits_per_note']:.2f} bits per note on unseen pieces, against "
            f"{best[1]['nll_bits_per_note']:.2f} for the best baseline ({best[0]})."
        )
    embed.add_field(name="The model", value="\n".join(lines)[:1024], inline=False)
    return embed


class SeedStore:
    """Seeds kept on disk by content hash, so a re-roll button can find its seed after a restart.

    At most `max_bytes` in all: past it the seeds used least recently go (their buttons then say so).
    """

    def __init__(self, state_dir: str | Path | None = None, max_bytes: int = 256 * 1024 * 1024):
        base = Path(state_dir) if state_dir else Path.home() / ".cache" / "etude"
        self.folder = base / "seeds"
        self.max_bytes = max_bytes

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.mid"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            self.prune(keep=path)
        else:
            path.touch()  # used again: the last to go
        return key

    def prune(self, keep: Path | None = None) -> None:
        """Delete the seeds used least recently until the store fits `max_bytes`."""
        files = []
        for p in self.folder.glob("*.mid"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= self.max_bytes:
                break
            if p != keep:
                p.unlink(missing_ok=True)
                total -= size

    def get(self, key: str) -> bytes | None:
        path = self.folder / f"{key}.mid"
        return path.read_bytes() if re.fullmatch(r"[0-9a-f]{16}", key) and path.is_file() else None
