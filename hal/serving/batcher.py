"""Dynamic batching: concurrent requests for one model run as one batch.

Each model has one ``Batcher``: a bounded queue of requests and a dispatcher on the event
loop. When one of the model's instances is free, the dispatcher takes the oldest request
together with the requests queued behind it whose tensors have the same shapes past the
batch axis and the same dtypes (only those can be concatenated), in arrival order, up to
``max_batch`` rows. While an instance computes, new requests queue, so under load each batch
takes what arrived during the previous one and batches grow with the load by themselves;
an idle server runs a lone request at once. ``max_delay_s`` (default 0, as Triton's
``max_queue_delay``) lets the oldest request wait that long for others to fill the batch,
which helps traffic that arrives spread out, at the cost of that much latency when alone.
The batch runs in a thread of its own (the compiled model releases the GIL in its
framework), its outputs are split back at the same row offsets, and each caller gets its
own rows.

A full queue refuses a request at once (``Overloaded``: 503 with ``Retry-After``, the
seconds the queue ahead needs at the measured batch time); a request waiting past its
timeout is dropped from the queue (504). ``close`` lets everything queued finish.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from hal.serving.protocol import ServeError

log = logging.getLogger("hal.serving")


class Overloaded(ServeError):
    def __init__(self, model: str, queued: int, retry_after: int):
        super().__init__(503, f"model {model!r} is overloaded: its queue holds {queued} "
                              f"request(s), its limit; retry after {retry_after} s",
                         {"Retry-After": str(retry_after)}, reason="overloaded")


@dataclass(eq=False)
class _Item:
    arrays: list[np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    arrived: float
    started: float = 0.0
    timing: dict = field(default_factory=dict)


Runner = Callable[[Any, list[np.ndarray]], Sequence[np.ndarray]]


class Batcher:
    """The queue and dispatcher of one model.

    ``run(instance, arrays)`` computes one batch on one of ``instances`` (each used by one
    thread at a time). ``max_batch``: rows per batch at most (0: the model has no batch
    axis; each request runs alone). ``batching``: False runs each request alone, as it came.
    """

    def __init__(self, name: str, run: Runner, instances: Sequence[Any], *, max_batch: int,
                 max_delay_s: float, batching: bool, queue: int, metrics=None):
        self.name = name
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.batching = batching and max_batch > 1
        self.queue_limit = queue
        self._run = run
        self._idle = list(instances)
        self._instances = len(self._idle)
        self._pool = ThreadPoolExecutor(max_workers=len(instances),
                                        thread_name_prefix=f"hal-serve-{name}")
        self._metrics = metrics
        self._pending: collections.deque[_Item] = collections.deque()
        self._running: set[asyncio.Task] = set()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._dispatcher: asyncio.Task | None = None
        self._closing = False
        self._batch_s = 0.0  # moving average of a batch's compute time, for Retry-After
        self.batches = 0

    # -- callers ----------------------------------------------------------------------------
    async def submit(self, arrays: list[np.ndarray], rows: int,
                     timeout_s: float | None = None) -> list[np.ndarray]:
        """The model's outputs for ``arrays`` (``rows`` samples along axis 0)."""
        self.admit()
        self._start()
        loop = asyncio.get_running_loop()
        key = tuple((a.shape[1:], a.dtype.str) for a in arrays) if self.batching else ()
        item = _Item(arrays, rows, key, loop.create_future(), time.perf_counter())
        self._pending.append(item)
        self._depth()
        self._arrived.set()
        try:
            if timeout_s is None:
                return await item.future
            return await asyncio.wait_for(asyncio.shield(item.future), timeout_s)
        except asyncio.TimeoutError:
            if item.started:
                raise ServeError(504, f"model {self.name!r} took longer than the request's "
                                      f"timeout of {timeout_s:g} s", reason="timeout") from None
            raise ServeError(504, f"the request waited longer than its timeout of "
                                  f"{timeout_s:g} s in the queue of model {self.name!r}",
                             reason="timeout") from None
        finally:
            if not item.future.done():
                item.future.cancel()  # timed out or the caller went away: drop it
                try:
                    self._pending.remove(item)
                except ValueError:
                    pass  # already taken into a batch
                self._depth()

    def admit(self) -> None:
        """Refuse at once (before the body is read and parsed) when the queue is full."""
        if self._closing:
            raise ServeError(503, f"model {self.name!r} is shutting down or being replaced; "
                                  f"retry", {"Retry-After": "1"}, reason="unavailable")
        if len(self._pending) >= self.queue_limit:
            raise Overloaded(self.name, len(self._pending), self.retry_after())

    def retry_after(self) -> int:
        """Seconds until the queue ahead has likely drained (at least 1)."""
        batches = len(self._pending) / max(1, self.max_batch if self.batching else 1) + 1
        return max(1, math.ceil(batches * self._batch_s / self._instances))

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return len(self._pending)

    async def close(self) -> None:
        """Refuse new requests, finish the queued and running ones, stop the threads."""
        self._closing = True
        if self._arrived is not None:
            self._arrived.set()
        if self._dispatcher is not None:
            await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._pool.shutdown(wait=False)

    # -- dispatcher -------------------------------------------------------------------------
    def _start(self) -> None:
        if self._dispatcher is None:
            self._arrived = asyncio.Event()
            self._slots = asyncio.Semaphore(len(self._idle))
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
            self._dispatcher.add_done_callback(self._dispatcher_ended)

    def _dispatcher_ended(self, task: asyncio.Task) -> None:
        """A dispatcher that died of a bug fails what is queued rather than leave it hanging."""
        exc = None if task.cancelled() else task.exception()
        if exc is None and not task.cancelled():
            return
        log.error("the dispatcher of model %r failed", self.name, exc_info=exc)
        self._closing = True
        error = ServeError(500, f"the batcher of model {self.name!r} failed: "
                                f"{type(exc).__name__}: {exc}")
        for it in self._pending:
            if not it.future.done():
                it.future.set_exception(error)
        self._pending.clear()

    def _depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self.depth)

    def _drop_done(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()

    async def _dispatch(self) -> None:
        while True:
            self._drop_done()
            while not self._pending:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                self._drop_done()
            await self._slots.acquire()
            batch = await self._gather()
            if not batch:
                self._slots.release()
                continue
            instance = self._idle.pop()
            task = asyncio.get_running_loop().create_task(self._execute(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _rows(self, key: tuple) -> int:
        return sum(it.rows for it in self._pending if it.key == key and not it.future.done())

    async def _gather(self) -> list[_Item]:
        """The next batch: the oldest live request and, when batching, those that fit it."""
        self._drop_done()
        if not self._pending:
            return []
        if self.batching and self._rows(self._pending[0].key) < self.max_batch:
            # requests whose bytes came in with this one's are one turn of the loop away
            await asyncio.sleep(0)
            self._drop_done()
            if not self._pending:
                return []
        if self.batching and self.max_delay_s > 0:
            deadline = self._pending[0].arrived + self.max_delay_s
            while not self._closing:
                self._drop_done()
                if not self._pending or self._rows(self._pending[0].key) >= self.max_batch:
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            self._drop_done()
            if not self._pending:
                return []
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        if self.batching and rows < self.max_batch:
            keep: collections.deque[_Item] = collections.deque()
            for it in self._pending:
                if it.future.done():
                    continue
                if it.key == first.key and rows + it.rows <= self.max_batch:
                    batch.append(it)
                    rows += it.rows
                else:
                    keep.append(it)
            self._pending = keep
        self._depth()
        return batch

    async def _execute(self, instance: Any, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        for it in batch:
            it.started = now
        m = self._metrics
        try:
            results, compute_s = await loop.run_in_executor(self._pool, self._compute,
                                                            instance, batch)
        except Exception as exc:  # one failure answers every request of the batch
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        finally:
            self._idle.append(instance)
            self._slots.release()
        self.batches += 1
        self._batch_s = compute_s if self.batches == 1 else 0.8 * self._batch_s + 0.2 * compute_s
        if m is not None:
            m.compute_seconds.observe(compute_s)
            m.batch_size.observe(sum(it.rows for it in batch))
            for it in batch:
                m.queue_seconds.observe(it.started - it.arrived)
        for it, res in zip(batch, results):
            if not it.future.done():
                it.future.set_result(res)

    def _compute(self, instance: Any, batch: list[_Item]) -> tuple[list, float]:
        """In a worker thread: concatenate, run, split at the callers' row offsets."""
        if len(batch) == 1:
            arrays = [a if a.flags.writeable else a.copy() for a in batch[0].arrays]
        else:
            arrays = [np.concatenate([it.arrays[i] for it in batch])
                      for i in range(len(batch[0].arrays))]
        t = time.perf_counter()
        outs = list(self._run(instance, arrays))
        compute_s = time.perf_counter() - t
        if len(batch) == 1:
            return [outs], compute_s
        total = sum(it.rows for it in batch)
        for i, o in enumerate(outs):
            if np.ndim(o) == 0 or o.shape[0] != total:
                raise ServeError(500, f"model {self.name!r} returned output #{i} of shape "
                                      f"{list(np.shape(o))} for a batch of {total} rows; its "
                                      f"outputs must keep the batch axis first (serve it with "
                                      f"max_batch=0)", reason="error")
        results, start = [], 0
        for it in batch:
            results.append([o[start:start + it.rows] for o in outs])
            start += it.rows
        return results, compute_s
