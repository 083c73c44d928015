"""`/healthz` and `/metrics` (Prometheus text format, by prometheus-client) on a port of their own.

Each bot and worker has its own registry. Speeds are counters (notes sampled, seconds spent sampling),
so a dashboard takes `rate(etude_notes_sampled_total[5m]) / rate(etude_sample_seconds_total[5m])`
for the recent speed rather than a lifetime average.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

Reader = Callable[[], float | Awaitable[float]]


class Metrics:
    """What a bot or worker counts, in a registry of its own."""

    def __init__(self, role: str):
        self.role = role
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter("etude_jobs", "Jobs finished, by outcome.", ["outcome"], registry=r)
        self.notes = Counter("etude_notes_sampled", "Notes and chords sampled.", registry=r)
        self.sample_seconds = Counter("etude_sample_seconds", "Seconds spent sampling.", registry=r)
        self.latency = Histogram(
            "etude_job_latency_seconds", "From request to result.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batches = Histogram(
            "etude_batch_size", "Jobs sampled together.", buckets=BATCH_BUCKETS, registry=r
        )
        self.readers: dict[str, tuple[Gauge, Reader]] = {}
        for outcome in ("ok", "failed"):
            self.jobs.labels(outcome)  # both series exist from the start, at 0

    def job(self, ok: bool, latency: float | None = None) -> None:
        self.jobs.labels("ok" if ok else "failed").inc()
        if latency is not None:
            self.latency.observe(latency)

    def sampled(self, notes: int, seconds: float) -> None:
        self.notes.inc(notes)
        self.sample_seconds.inc(seconds)

    def gauge(self, name: str, help: str, read: Reader) -> None:
        """A gauge read when `/metrics` is asked for (`read` may be async)."""
        self.readers[name] = (Gauge(f"etude_{name}", help, registry=self.registry), read)

    async def render(self) -> bytes:
        for name, (gauge, read) in self.readers.items():
            try:
                value = read()
                gauge.set(float(await value if inspect.isawaitable(value) else value))
            except Exception as e:  # a gauge that cannot be read (Redis away) keeps its last value
                log.debug("gauge %s not read: %s", name, e)
        return generate_latest(self.registry)


async def serve(
    port: int,
    metrics: Metrics,
    healthy: Callable[[], Awaitable[bool]],
    detail: Callable[[], Awaitable[dict]] | None = None,
    host: str = "0.0.0.0",
) -> web.AppRunner:
    """Start the health server; returns its runner (call `cleanup()` to stop)."""

    async def healthz(request: web.Request) -> web.Response:
        ok = await healthy()
        body = {"ok": ok, "role": metrics.role, **(await detail() if detail else {})}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(
            body=await metrics.render(),
            headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Content-Type-Options": "nosniff"},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("health and metrics on port %d", port)
    return runner
