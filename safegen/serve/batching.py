"""Dynamic batching: concurrent requests with the same settings share one model call.

Why a thread and not the event loop: a pipeline call holds the CPU/GPU for up to seconds
and must never block the loop that accepts, refuses (429) and times out requests. One
worker thread per model owns it; the loop only enqueues work and awaits futures.

How a batch forms: the oldest waiting item opens a batch; items with the same key (the
settings that must match to share a call) join it until ``max_batch`` items are in or
``max_wait_s`` has passed since the oldest arrived. Items with other keys keep their
place for the next call. With a ``finish`` stage (classify, encode), a second thread
finishes one batch while the model already runs the next, as the batch runner's writer
does; at most two batches wait past the model, so memory stays bounded. The queue is
bounded in items: a submit that does not fit is refused whole (:class:`QueueFull`) with
an estimate of when to retry, so an overloaded server answers quickly instead of piling
up work it cannot finish in time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

_logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue cannot take the submitted items; retry after ``retry_after`` seconds."""

    def __init__(self, depth: int, capacity: int, retry_after: int):
        self.depth, self.capacity, self.retry_after = depth, capacity, retry_after
        super().__init__(f"queue full ({depth} of {capacity} waiting); retry in {retry_after} s")


@dataclass
class WorkItem:
    """One unit of work (an image, a caption) and where its result goes."""

    key: Hashable
    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set by the request handler on timeout; read by the worker thread


class DynamicBatcher:
    """Runs ``run_batch(payloads) -> results`` on one worker thread over a bounded queue.

    Args:
        run_batch: called with a list of payloads sharing one key; returns one result each.
        max_batch: most items per call.
        max_wait_s: how long the oldest waiting item waits for others to join its batch.
        queue_size: most items waiting (not yet running); beyond it submits are refused.
        name: for logs, metrics and the thread's name.
        on_batch: called after each call with ``(size, seconds)`` (metrics).
        finish: optional second stage, ``finish(payloads, raw) -> results``, run on its own
            thread while the next batch is in ``run_batch`` (whose output is then ``raw``).

    A call that raises is retried item by item (a batch of one: its item gets the error), so
    one request the model cannot take fails alone; ``finish`` is retried the same way when
    ``raw`` is a list with one entry per item.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch: int,
        max_wait_s: float,
        queue_size: int,
        name: str = "batcher",
        on_batch: Callable[[int, float], None] | None = None,
        finish: Callable[[list[Any], Any], Sequence[Any]] | None = None,
    ):
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch, self.max_wait_s, self.queue_size = max_batch, max_wait_s, queue_size
        self.name = name
        self.on_batch = on_batch
        self._queue: deque[WorkItem] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running = 0
        self._batch_seconds = 0.0  # moving average of one call, for Retry-After
        self._call_started: float | None = None  # monotonic start of the call in progress
        self.finish = finish
        self._handoff: queue.Queue = queue.Queue(maxsize=1)
        self._finishing = 0
        self._thread = threading.Thread(target=self._work, name=f"safegen-{name}", daemon=True)
        self._thread.start()
        self._finisher = None
        if finish is not None:
            self._finisher = threading.Thread(target=self._finish_loop, name=f"safegen-{name}-finish", daemon=True)
            self._finisher.start()

    # ------------------------------------------------------------------ loop side
    @property
    def depth(self) -> int:
        """Items waiting (not running)."""
        with self._cond:
            return sum(1 for it in self._queue if not it.cancelled)

    @property
    def running(self) -> int:
        """Items inside the model call or its finish stage now."""
        return self._running + self._finishing

    def retry_after(self, depth: int | None = None) -> int:
        """Whole seconds until the queue has likely drained enough to take new work (>= 1)."""
        depth = self.depth if depth is None else depth
        calls = math.ceil((depth + self.running) / self.max_batch)
        per_call = self._batch_seconds
        started = self._call_started
        if started is not None:  # before the first call ends, the one in progress is the best guess
            per_call = max(per_call, time.monotonic() - started)
        return max(1, math.ceil(calls * max(per_call, 0.05)))

    def submit(self, work: Sequence[tuple[Hashable, Any]]) -> list[WorkItem]:
        """Enqueue ``(key, payload)`` pairs, all or none; await each item's ``future``.

        Must be called from the event loop that will await the futures. Raises
        :class:`QueueFull` when the items do not fit, or RuntimeError after :meth:`stop`.
        """
        loop = asyncio.get_running_loop()
        items = [WorkItem(key, payload, loop.create_future(), loop) for key, payload in work]
        with self._cond:
            if self._stopping:
                raise RuntimeError(f"{self.name} is shutting down")
            depth = sum(1 for it in self._queue if not it.cancelled)
            if depth + len(items) > self.queue_size:
                raise QueueFull(depth, self.queue_size, self.retry_after(depth))
            self._queue.extend(items)
            self._cond.notify()
        return items

    @staticmethod
    def cancel(items: Sequence[WorkItem]) -> None:
        """Give up on items (timed out): waiting ones are skipped, running ones' results dropped."""
        for item in items:
            item.cancelled = True

    def stop(self, timeout: float | None = 30.0) -> None:
        """Finish what is queued, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._finisher is not None:
            self._finisher.join(timeout)

    # ------------------------------------------------------------------ worker side
    def _next_batch(self) -> list[WorkItem] | None:
        """Block until a batch is ready (see the module docstring); None when stopping and empty."""
        with self._cond:
            while True:
                self._drop_cancelled()
                if self._queue:
                    break
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.enqueued + self.max_wait_s
            while True:
                self._drop_cancelled()
                batch = [it for it in self._queue if it.key == first.key and not it.cancelled][: self.max_batch]
                remaining = deadline - time.monotonic()
                if first.cancelled or len(batch) >= self.max_batch or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            if first.cancelled:  # timed out while waiting for company: start over with the next
                return []
            taken = {id(it) for it in batch}
            self._queue = deque(it for it in self._queue if id(it) not in taken)
            self._running = len(batch)
            self._call_started = time.monotonic()
            return batch

    def _drop_cancelled(self) -> None:
        if any(it.cancelled for it in self._queue):
            self._queue = deque(it for it in self._queue if not it.cancelled)

    def _work(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                if not batch:
                    continue
                raw, error = self._call(batch)
                parts = [(batch, raw, error)]
                if error is not None and len(batch) > 1:
                    # One bad item (or a call too large for memory) must not fail the others' requests.
                    _logger.warning("%s: retrying the %d items of the failed batch one by one", self.name, len(batch))
                    parts = [([it], *self._call([it])) for it in batch if not it.cancelled]
                with self._cond:
                    self._running = 0
                for items, part_raw, part_error in parts:
                    if self.finish is not None and part_error is None:
                        with self._cond:
                            self._finishing += len(items)
                        # Blocks while one finished batch already waits: at most two batches past the model.
                        self._handoff.put((items, part_raw))
                    else:
                        self._deliver(items, part_raw, part_error)
        finally:
            if self.finish is not None:
                self._handoff.put(None)

    def _call(self, batch: list[WorkItem]) -> tuple[Any, BaseException | None]:
        """One model call: ``(raw, None)``, or ``(None, error)`` when it raised."""
        start = time.perf_counter()
        self._call_started = time.monotonic()
        try:
            raw: Any = self.run_batch([it.payload for it in batch])
            error: BaseException | None = None
        except Exception as exc:
            _logger.exception("%s: a batch of %d failed", self.name, len(batch))
            raw, error = None, exc
        seconds = time.perf_counter() - start
        self._call_started = None
        self._batch_seconds = seconds if self._batch_seconds == 0 else 0.8 * self._batch_seconds + 0.2 * seconds
        if self.on_batch is not None:
            self.on_batch(len(batch), seconds)
        return raw, error

    def _finish_loop(self) -> None:
        while True:
            item = self._handoff.get()
            if item is None:
                return
            batch, raw = item
            parts = [(batch, *self._finish(batch, raw))]
            split = isinstance(raw, (list, tuple)) and len(raw) == len(batch)
            if parts[0][2] is not None and len(batch) > 1 and split:
                # As in the model stage: finish each item alone so only the bad one fails.
                parts = [([it], *self._finish([it], [r])) for it, r in zip(batch, raw, strict=True)]
            with self._cond:
                self._finishing -= len(batch)
            for items, results, error in parts:
                self._deliver(items, results, error)

    def _finish(self, batch: list[WorkItem], raw: Any) -> tuple[Any, BaseException | None]:
        try:
            return self.finish([it.payload for it in batch], raw), None
        except Exception as exc:
            _logger.exception("%s: finishing a batch of %d failed", self.name, len(batch))
            return None, exc

    def _deliver(self, batch: list[WorkItem], results: Any, error: BaseException | None) -> None:
        if error is None:
            results = list(results)
            if len(results) != len(batch):
                error = RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        outcome = [(None, error)] * len(batch) if error is not None else [(r, None) for r in results]
        for item, (result, err) in zip(batch, outcome, strict=True):
            if item.cancelled:
                continue
            try:
                item.loop.call_soon_threadsafe(_resolve, item.future, result, err)
            except RuntimeError:  # the loop that asked has closed (server stopping)
                _logger.debug("%s: dropped a result for a closed event loop", self.name)


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the handler gave up on it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
