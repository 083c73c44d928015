"""`/healthz` and `/metrics` (Prometheus text format) on a port of their own, for the bot and each worker."""

from __future__ import annotations

import bisect
import inspect
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    """A Prometheus histogram: cumulative bucket counts, sum and count."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.sum:.6f}",
            f"{name}_count {self.count}",
        ]
        return out


class Metrics:
    """What a bot or worker counts; `render()` writes the exposition text."""

    def __init__(self, role: str):
        self.role = role
        self.done = 0
        self.failed = 0
        self.notes = 0
        self.sample_seconds = 0.0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batches = Histogram(BATCH_BUCKETS)
        self.gauges: dict[str, Callable[[], float | Awaitable[float]]] = {}

    async def read_gauges(self) -> dict[str, float]:
        values = {}
        for name, read in self.gauges.items():
            try:
                value = read()
                values[name] = float(await value if inspect.isawaitable(value) else value)
            except Exception:  # a gauge that cannot be read (Redis away) is left out, not fatal
                continue
        return values

    def render(self, gauges: dict[str, float] | None = None) -> str:
        p = "etude_"
        lines = [
            f"# HELP {p}jobs_done_total Jobs finished with a piece.",
            f"# TYPE {p}jobs_done_total counter",
            f"{p}jobs_done_total {self.done}",
            f"# HELP {p}jobs_failed_total Jobs finished with an error.",
            f"# TYPE {p}jobs_failed_total counter",
            f"{p}jobs_failed_total {self.failed}",
            f"# HELP {p}notes_sampled_total Notes and chords sampled.",
            f"# TYPE {p}notes_sampled_total counter",
            f"{p}notes_sampled_total {self.notes}",
            f"# HELP {p}notes_per_second Notes sampled per second of sampling.",
            f"# TYPE {p}notes_per_second gauge",
            f"{p}notes_per_second {self.notes / self.sample_seconds if self.sample_seconds else 0:.1f}",
            f"# HELP {p}job_latency_seconds From request to result.",
            f"# TYPE {p}job_latency_seconds histogram",
            *self.latency.lines(f"{p}job_latency_seconds"),
            f"# HELP {p}batch_size Jobs sampled together.",
            f"# TYPE {p}batch_size histogram",
            *self.batches.lines(f"{p}batch_size"),
        ]
        for name, value in (gauges or {}).items():
            lines += [f"# TYPE {p}{name} gauge", f"{p}{name} {value:g}"]
        return "\n".join(lines) + "\n"


async def serve(
    port: int, metrics: Metrics, healthy: Callable[[], Awaitable[bool]], host: str = "0.0.0.0"
) -> web.AppRunner:
    """Start the health server; returns its runner (call `cleanup()` to stop)."""

    async def healthz(request: web.Request) -> web.Response:
        ok = await healthy()
        return web.json_response({"ok": ok, "role": metrics.role}, status=200 if ok else 503)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(
            text=metrics.render(await metrics.read_gauges()),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("health and metrics on port %d", port)
    return runner
