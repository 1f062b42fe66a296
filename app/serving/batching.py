"""Adaptive batching with admission control: concurrent requests for one model
version share a runtime call, and the queue in front of it is bounded.

At most one runtime call per batcher is in flight. While it runs, new requests
queue; when it returns, everything queued (up to ``max_batch`` rows) goes into the
next call. A lone request runs at once. Only when others are already queued does
the batcher wait, at most ``max_wait`` seconds, for the batch to fill.

Overload is answered, not absorbed (Triton's queue policy, Ray Serve's
``max_queued_requests``): a request that would take the queue past ``max_queued``
rows is refused at once with :class:`Overloaded`. Queued work nobody waits for any
more is dropped before it reaches the runtime: a caller that was cancelled (timed
out, or its gRPC call ended), a request whose deadline passed, and one whose client
disconnected (asked only of requests that waited, so the common path pays nothing).

Each caller gets back exactly its own rows; a failed call fails only its own batch,
and invalid input never reaches here (it is rejected while encoding).

A runtime call normally runs on a worker thread, so that the event loop keeps
serving while the model computes. Handing a call to a thread and back costs
hundreds of microseconds once the loop is busy (the GIL changes hands several
times), which is more than a small model takes for a whole batch. So a batch
expected to take at most ``inline_budget`` seconds runs on the loop itself (see
:class:`CallCost` for how that is expected). The cost is measured as the CPU time of
the thread that ran the call when the runtime computes on its caller's thread
(``cpu_timed``: ONNX Runtime with one intra-op thread): wall-clock time on a worker
thread includes its waits for the GIL, which under load made a 30 µs call look like
700 µs and kept every call off the loop. Measured at c=64 (native iris, v2 income,
paired runs), this answers 2-26% more requests than a thread for every call; a slow
model (digits v2's CNN, 115 µs a row here) never qualifies.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from app.serving.errors import DeadlineExceeded, Overloaded
from app.serving.statistics import Timing

# a request that waited at least this long is asked whether its client is still there
ASK_AFTER_S = 0.05


@dataclass
class Pending:
    x: np.ndarray
    future: asyncio.Future[np.ndarray]
    queued_at: float
    deadline: float | None = None  # loop time
    disconnected: Callable[[], Awaitable[bool]] | None = field(default=None, repr=False)
    timing: Timing | None = None  # filled with when its runtime call ran (statistics)


class CallCost:
    """What a runtime call of ``rows`` rows is expected to cost, learnt from the calls made.

    Kept per size class (1, 2-3, 4-7, ... rows) as a cost per row, because for a small
    model the fixed cost of a call is most of it: per row, a 1-row call of the salary
    model costs 45 times what a 64-row call does, so one running average over all sizes
    swung with the batch sizes of the last few calls. Each class keeps a decaying minimum:
    a measurement below the estimate replaces it, one above raises it by at most
    ``RISE``. Under load a call's CPU time also holds the GIL hand-offs and cache misses
    that other threads cause, 3-5 times the call's own cost for the salary model here;
    as an average, those flipped a model between the loop and a thread from one batch to
    the next, and each flip made the next measurement worse. The minimum follows what
    the call itself costs.

    Measured on a worker thread, a small call costs most (a 1-row salary call: 160 µs
    or more of CPU there, 8-20 µs on the loop), so an estimate made only from thread
    measurements would keep a cheap model off the loop for good. A call expected to
    cost at most ``PROBE_RANGE`` times the budget therefore runs on the loop once in
    ``PROBE_EVERY`` calls of its size, to be measured there; a slow model (a 64-row
    batch of digits v2 takes 7 ms) is never tried.
    """

    RISE = 1.05
    PROBE_RANGE = 4.0
    PROBE_EVERY = 32

    def __init__(self) -> None:
        self._per_row: dict[int, float] = {}  # size class -> seconds per row
        self._calls: dict[int, int] = {}  # size class -> calls kept off the loop

    def observe(self, rows: int, seconds: float) -> None:
        size = rows.bit_length()
        per_row = seconds / rows
        last = self._per_row.get(size)
        self._per_row[size] = per_row if last is None else min(per_row, last * self.RISE)

    def expected(self, rows: int) -> float | None:
        """Seconds, or None before any call of this size or smaller was measured (a
        smaller call costs at least as much per row, so its figure errs on the high side)."""
        size = rows.bit_length()
        per_row = self._per_row.get(size)
        if per_row is None:
            smaller = [s for s in self._per_row if s < size]
            if not smaller:
                return None
            per_row = self._per_row[max(smaller)]
        return per_row * rows

    def runs_inline(self, rows: int, budget: float) -> bool:
        """Whether a call of ``rows`` rows should run on the event loop."""
        cost = self.expected(rows)
        if cost is None:
            return False
        if cost <= budget:
            return True
        if cost > self.PROBE_RANGE * budget:
            return False
        size = rows.bit_length()
        calls = self._calls[size] = self._calls.get(size, 0) + 1
        return calls % self.PROBE_EVERY == 0


class Batcher:
    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int], None] | None = None,
        max_queued: int | None = None,
        on_drop: Callable[[str], None] | None = None,
        name: str = "model",
        inline_budget: float = 0.0,
        cpu_timed: bool = False,
    ) -> None:
        self._fn = fn
        self.inline_budget = inline_budget
        self._clock = time.thread_time if cpu_timed else time.perf_counter
        self.cost = CallCost()
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_queued = max_queued
        self.name = name
        self._queue: deque[Pending] = deque()
        self._queued_rows = 0
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._on_batch = on_batch
        self._on_drop = on_drop

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def is_full(self) -> bool:
        """No request could join the queue now (a lone request always may)."""
        return (
            self.max_queued is not None
            and bool(self._queue)
            and self._queued_rows >= self.max_queued
        )

    def refuse_full(self) -> Overloaded:
        if self._on_drop is not None:
            self._on_drop("queue_full")
        return Overloaded(
            f"the queue of {self.name} is full ({self._queued_rows} rows waiting, "
            f"at most {self.max_queued}); retry shortly"
        )

    async def submit(
        self,
        x: np.ndarray,
        deadline: float | None = None,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        timing: Timing | None = None,
    ) -> np.ndarray:
        """The runtime's rows for ``x``; raises Overloaded at once when the queue is full,
        DeadlineExceeded when ``deadline`` (loop time) passes while it waits. ``timing``
        gets when the runtime call that served it began and ended."""
        if (
            self.max_queued is not None
            and self._queue
            and self._queued_rows + len(x) > self.max_queued
        ):
            # a lone request always runs: the bound is on what waits behind others
            raise self.refuse_full()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.append(Pending(x, future, loop.time(), deadline, disconnected, timing))
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
            batch = await self._live(self._take(), loop)
            if not batch:
                continue
            xs = [p.x for p in batch]
            joined = xs[0] if len(xs) == 1 else np.concatenate(xs)
            if self._on_batch is not None:
                self._on_batch(len(joined))
            began = time.perf_counter_ns()
            try:
                if self._runs_inline(len(joined)):
                    out, took = self._timed(joined)
                else:
                    out, took = await loop.run_in_executor(self._executor, self._timed, joined)
            except Exception as exc:  # the runtime failed: tell every caller in the batch
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            ended = time.perf_counter_ns()
            self.cost.observe(len(joined), took)
            start = 0
            for pending in batch:
                if pending.timing is not None:
                    pending.timing.started_ns, pending.timing.finished_ns = began, ended
                if not pending.future.done():  # a caller may have been cancelled meanwhile
                    pending.future.set_result(out[start : start + len(pending.x)])
                start += len(pending.x)

    def _runs_inline(self, rows: int) -> bool:
        return self.cost.runs_inline(rows, self.inline_budget)

    def _timed(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        """The runtime's answer and what it cost (on whichever thread runs it)."""
        clock = self._clock
        started = clock()
        out = self._fn(x)
        return out, clock() - started

    async def _live(self, batch: list[Pending], loop: asyncio.AbstractEventLoop) -> list[Pending]:
        """The part of ``batch`` someone still waits for; the rest is answered or dropped.

        Whether a long-queued caller is still connected is asked of all of them at once:
        each question costs a turn of the event loop, and a busy loop's turn can take
        tens of milliseconds, so asking one by one would stall the whole batch."""
        now = loop.time()
        reasons: list[str | None] = []
        for pending in batch:
            reason = None
            if pending.future.done():
                reason = "cancelled"
            elif pending.deadline is not None and now > pending.deadline:
                reason = "deadline"
                waited = now - pending.queued_at
                pending.future.set_exception(
                    DeadlineExceeded(
                        f"the request's deadline passed after {waited:.3f} s in the queue"
                    )
                )
            reasons.append(reason)
        ask: list[tuple[int, Callable[[], Awaitable[bool]]]] = [
            (i, pending.disconnected)
            for i, pending in enumerate(batch)
            if reasons[i] is None
            and pending.disconnected is not None
            and now - pending.queued_at >= ASK_AFTER_S
        ]
        if ask:
            answers = await asyncio.gather(*(question() for _, question in ask))
            for (i, _), gone in zip(ask, answers, strict=True):
                if gone:
                    reasons[i] = "disconnected"
                    batch[i].future.cancel()
        live = []
        for pending, reason in zip(batch, reasons, strict=True):
            if reason is None:
                live.append(pending)
            elif self._on_drop is not None:
                self._on_drop(reason)
        return live

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

    def _take(self) -> list[Pending]:
        batch = [self._queue.popleft()]
        rows = len(batch[0].x)
        while self._queue and rows + len(self._queue[0].x) <= self.max_batch:
            item = self._queue.popleft()
            rows += len(item.x)
            batch.append(item)
        self._queued_rows -= rows
        return batch
