"""The embedded mode's journal in SQLite under `STATE_DIR`: a restarted bot answers what was in flight.

The embedded queue itself lives in the bot's memory, so a job journaled by an earlier process is reported
as not kicked and is queued again on recovery. A delivered job keeps a small row for a day, so that a job
that finished twice is still answered once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from bot.queue.jobs import KEEP_DELIVERED_SECONDS, JobSpec


class SQLiteJournal:
    """`bot.queue.interfaces.Journal` in one SQLite file; every call runs off the event loop."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.kicked: set[str] = set()  # kicked into this process's in-memory queue
        self.lock = asyncio.Lock()
        db = self._connect()
        try:
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, spec TEXT NOT NULL, "
                    "delivered INTEGER NOT NULL DEFAULT 0, at REAL NOT NULL)"
                )
                db.execute(
                    "DELETE FROM jobs WHERE delivered = 1 AND at < ?", (time.time() - KEEP_DELIVERED_SECONDS,)
                )
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    async def _run(self, sql: str, args: tuple = ()) -> tuple[list[tuple], int]:
        """The rows and the count of rows changed."""

        def go() -> tuple[list[tuple], int]:
            db = self._connect()
            try:
                with db:  # one transaction, committed on the way out
                    cur = db.execute(sql, args)
                    return cur.fetchall(), cur.rowcount
            finally:
                db.close()

        async with self.lock:
            return await asyncio.to_thread(go)

    async def add(self, spec: JobSpec) -> None:
        await self._run(
            "INSERT OR REPLACE INTO jobs (job_id, spec, delivered, at) VALUES (?, ?, 0, ?)",
            (spec.job_id, json.dumps(spec.to_json()), time.time()),
        )

    async def mark_kicked(self, job_id: str) -> None:
        self.kicked.add(job_id)

    async def remove(self, job_id: str) -> None:
        self.kicked.discard(job_id)
        # The row stays as a delivery marker when it was delivered; the spec (seed, token) goes.
        await self._run("UPDATE jobs SET spec = '' WHERE job_id = ? AND delivered = 1", (job_id,))
        await self._run("DELETE FROM jobs WHERE job_id = ? AND delivered = 0", (job_id,))

    async def contains(self, job_id: str) -> bool:
        rows, _ = await self._run("SELECT COUNT(*) FROM jobs WHERE job_id = ? AND delivered = 0", (job_id,))
        return bool(rows[0][0])

    async def delivered(self, job_id: str) -> bool:
        rows, _ = await self._run("SELECT COUNT(*) FROM jobs WHERE job_id = ? AND delivered = 1", (job_id,))
        return bool(rows[0][0])

    async def mark_delivered(self, job_id: str) -> None:
        await self._run(
            "INSERT INTO jobs (job_id, spec, delivered, at) VALUES (?, '', 1, ?) "
            "ON CONFLICT(job_id) DO UPDATE SET delivered = 1, at = excluded.at",
            (job_id, time.time()),
        )

    async def pending(self) -> list[tuple[JobSpec, bool]]:
        rows, _ = await self._run("SELECT job_id, spec FROM jobs WHERE delivered = 0 ORDER BY at")
        return [(JobSpec.from_json(json.loads(spec)), job_id in self.kicked) for job_id, spec in rows]

    async def close(self) -> None:
        return None
