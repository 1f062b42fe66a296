"""Adaptive batching: concurrent requests for one model version share a runtime call.

At most one runtime call per batcher is in flight. While it runs, new requests
queue; when it returns, everything queued (up to ``max_batch`` rows) goes into the
next call. A lone request runs at once. Only when others are already queued does
the batcher wait, at most ``max_wait`` seconds, for the batch to fill.
Each caller gets back exactly its own rows; a failed call fails only its own batch,
and invalid input never reaches here (it is rejected while encoding).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np


class Batcher:
    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._fn = fn
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = deque()
        self._queued_rows = 0
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._on_batch = on_batch

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def submit(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append((x, future))
        self._queued_rows += len(x)
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if len(self._queue) > 1 and self._queued_rows < self.max_batch and self.max_wait > 0:
                await self._fill(loop)
            batch = self._take()
            xs = [x for x, _ in batch]
            joined = xs[0] if len(xs) == 1 else np.concatenate(xs)
            if self._on_batch is not None:
                self._on_batch(len(joined))
            try:
                out = await loop.run_in_executor(self._executor, self._fn, joined)
            except Exception as exc:  # the runtime failed: tell every caller in the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for x, future in batch:
                if not future.done():  # a caller may have been cancelled meanwhile
                    future.set_result(out[start : start + len(x)])
                start += len(x)

    async def _fill(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = loop.time() + self.max_wait
        self._arrived = asyncio.Event()
        try:
            while self._queued_rows < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
        finally:
            self._arrived = None

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        batch = [self._queue.popleft()]
        rows = len(batch[0][0])
        while self._queue and rows + len(self._queue[0][0]) <= self.max_batch:
            item = self._queue.popleft()
            rows += len(item[0])
            batch.append(item)
        self._queued_rows -= rows
        return batch
