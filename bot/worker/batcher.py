"""Batching: requests that arrive together are sampled in one call, in batches of the sizes the sampler
was compiled for."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.aio import cancel_and_wait
from bot.model.composer import Composition, Seed
from bot.options import Options

OnStart = Callable[[], Awaitable[None]]


class Batcher:
    """Gathers requests that arrive together and samples them in one call on a worker thread.

    The first request waits at most `wait_ms` for company; a batch holds at most `size` requests.
    """

    def __init__(
        self,
        compose: Callable[[list], list],
        size: int = 16,
        wait_ms: float = 20,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.compose, self.size, self.wait = compose, size, wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.on_batch = on_batch

    async def submit(
        self, options: Options, seed: Seed | None, on_start: OnStart | None = None
    ) -> Composition:
        """The piece for one request; `on_start()` is awaited when its batch starts sampling."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="etude-batcher")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((options, seed, future, on_start))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(batch) < self.size:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            batch = [b for b in batch if not b[2].cancelled()]
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(len(batch))
            # Progress is a courtesy: a failing callback does not hold the batch up.
            await asyncio.gather(*(start() for *_, start in batch if start), return_exceptions=True)
            try:
                pieces = await asyncio.to_thread(self.compose, [(o, s) for o, s, *_ in batch])
            except Exception as e:  # every request of the batch learns of it; the loop goes on
                for _, _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, _, fut, _), piece in zip(batch, pieces):
                if not fut.done():
                    fut.set_result(piece)

    async def close(self) -> None:
        await cancel_and_wait([self.task])


def batch_sizes(most: int) -> list[int]:
    """The batch sizes the sampler is given: powers of two up to `most`, and `most` itself.

    The sampler compiles once per batch shape; rounding a batch up to the next of these (with one-note
    fillers) keeps the shapes few enough to compile them all before the worker reports ready.
    """
    sizes = [1]
    while sizes[-1] * 2 < most:
        sizes.append(sizes[-1] * 2)
    return sorted({*sizes, most})
