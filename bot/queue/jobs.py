"""Jobs: what travels from the bot to a worker and back.

A job is plain JSON (no pickle of anything a user sent): the options, the seed as base64, and the
interaction's token so that whoever finishes the job can answer the user. A result travels as parts: its
description as JSON and each file's bytes as they are (`JobResult.to_parts`), so a 12 MiB reply costs
12 MiB in Redis, not the third more of base64.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.codec import from_record
from bot.options import UPLOAD_LIMIT_BYTES, Options

# How long a delivered job's marker is kept, in SQLite (embedded) and in Redis alike: far past the 15
# minutes a Discord interaction can be answered in, so a job that finished twice is still answered once.
KEEP_DELIVERED_SECONDS = 86400

# A finished job's result stays in Redis until its user has it (the bot then deletes it); this bounds the
# time it waits for a bot that is down: longer than delivery's own patience (15 minutes, then an hour).
RESULT_TTL_SECONDS = 6 * 3600


@dataclass
class JobSpec:
    """One request to compose, as JSON-friendly fields."""

    options: dict
    user_id: int = 0
    guild_id: int | None = None
    channel_id: int | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    interaction_created: float = 0.0  # epoch seconds; follow-ups work for 15 minutes after this
    attachment_limit: int = UPLOAD_LIMIT_BYTES
    kind: str = "compose"  # compose, reroll, continue or harmonize
    seed_b64: str | None = None
    seed_name: str = "seed"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    submitted: float = field(default_factory=time.time)

    @property
    def seed(self) -> bytes | None:
        return base64.b64decode(self.seed_b64) if self.seed_b64 else None

    def with_seed(self, data: bytes | None, name: str = "seed") -> JobSpec:
        self.seed_b64 = base64.b64encode(data).decode() if data else None
        self.seed_name = name
        return self

    def compose_options(self) -> Options:
        """The job's options, checked (`bot.codec`)."""
        return from_record(self.options)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> JobSpec:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ResultFile:
    name: str
    data: bytes
    content_type: str

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "b64": base64.b64encode(self.data).decode(),
            "content_type": self.content_type,
        }

    @classmethod
    def from_json(cls, d: dict) -> ResultFile:
        return cls(d["name"], base64.b64decode(d["b64"]), d["content_type"])


@dataclass
class JobResult:
    """A finished job: files and a description, or an error whose text is safe to show the user."""

    job_id: str
    ok: bool
    error: str | None = None
    files: list[ResultFile] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["files"] = [f.to_json() for f in self.files]
        return d

    @classmethod
    def from_json(cls, d: dict) -> JobResult:
        return cls._from_fields(d, [ResultFile.from_json(f) for f in d.get("files", [])])

    @classmethod
    def _from_fields(cls, d: dict, files: list[ResultFile]) -> JobResult:
        """A result from its fields as `to_json` and `to_parts` write them, the files already read."""
        return cls(
            d["job_id"],
            d["ok"],
            d.get("error"),
            files,
            d.get("info", {}),
            d.get("timings", {}),
            d.get("worker", ""),
        )

    def to_parts(self) -> dict[str, bytes]:
        """`meta`: everything but the files' bytes, as JSON; `file:<i>`: the i-th file's bytes, raw."""
        meta = asdict(self)
        meta["files"] = [{"name": f.name, "content_type": f.content_type} for f in self.files]
        parts = {"meta": json.dumps(meta).encode()}
        parts.update({f"file:{i}": f.data for i, f in enumerate(self.files)})
        return parts

    @classmethod
    def from_parts(cls, parts: dict) -> JobResult:
        """The result `to_parts` wrote; field names may come back as bytes (Redis) or str."""
        parts = {k.decode() if isinstance(k, bytes) else k: v for k, v in parts.items()}
        meta = json.loads(parts["meta"])
        files = [
            ResultFile(f["name"], parts[f"file:{i}"], f["content_type"]) for i, f in enumerate(meta["files"])
        ]
        return cls._from_fields(meta, files)
