"""Dynamic batching: concurrent requests for one model run as one batch.

Each model has one ``Batcher``: a bounded queue of requests and one worker thread per
instance of the compiled model. A free worker takes the oldest request together with the
requests queued behind it whose tensors have the same shapes past the batch axis and the
same dtypes (only those can be concatenated), in arrival order, up to ``max_batch`` rows. While an instance computes, new requests queue, so under load each batch
takes what arrived during the previous one and batches grow with the load by themselves;
an idle server runs a lone request at once. ``max_delay_s`` (default 0, as Triton's
``max_queue_delay``) lets the oldest request wait that long for others to fill the batch,
which helps traffic that arrives spread out, at the cost of that much latency when alone.
The worker runs the batch (the compiled model releases the GIL in its framework), splits
its outputs back at the same row offsets, and hands each caller its own rows on the event
loop. The workers take the next batch themselves, without waiting for a turn of the event
loop, so a loop busy with connections never leaves a model idle while requests queue.

A full queue refuses a request at once (``Overloaded``: 503 with ``Retry-After``, the
seconds the queue ahead needs at the measured batch time); a request waiting past its
timeout is dropped from the queue (504). ``close`` lets everything queued finish.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from hal.serving.protocol import ServeError

log = logging.getLogger("hal.serving")


#: a batch is shared among idle instances only when batches take longer than this: waking
#: another instance costs a thread switch and a second call, which a faster batch does not
#: repay (an Identity model served 11 % fewer requests with every batch shared)
SPLIT_ABOVE_S = 200e-6


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


Runner = Callable[[Any, list[np.ndarray]], Sequence[np.ndarray]]


class Batcher:
    """The queue and the workers of one model.

    ``run(instance, arrays)`` computes one batch on one of ``instances`` (each used by its
    own worker thread). ``max_batch``: rows per batch at most (0: the model has no batch
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
        self._instances = list(instances)
        self._metrics = metrics
        self._pending: collections.deque[_Item] = collections.deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._batch_s = 0.0  # moving average of a batch's compute time, for Retry-After
        self._busy = 0  # instances computing a batch now
        self.batches = 0

    # -- callers (the event loop) -------------------------------------------------------------
    async def submit(self, arrays: list[np.ndarray], rows: int,
                     timeout_s: float | None = None) -> list[np.ndarray]:
        """The model's outputs for ``arrays`` (``rows`` samples along axis 0)."""
        self.admit()
        loop = asyncio.get_running_loop()
        self._start(loop)
        key = tuple((a.shape[1:], a.dtype.str) for a in arrays) if self.batching else ()
        item = _Item(arrays, rows, key, loop.create_future(), time.perf_counter())
        with self._cond:
            if len(self._pending) >= self.queue_limit:
                raise Overloaded(self.name, len(self._pending), self.retry_after())
            self._pending.append(item)
            self._cond.notify()
        self._depth()
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
                with self._cond:
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
        return max(1, math.ceil(batches * self._batch_s / len(self._instances)))

    @property
    def closing(self) -> bool:
        """The model is shutting down or being replaced: it takes no new request."""
        return self._closing

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return len(self._pending)

    async def close(self) -> None:
        """Refuse new requests, finish the queued and running ones, stop the workers."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        threads = list(self._threads)
        if threads:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: [t.join() for t in threads])
            await asyncio.sleep(0)  # the last batch's answers, handed over by call_soon

    # -- workers (one thread per instance) ----------------------------------------------------
    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._threads:
            return
        self._loop = loop
        for i, instance in enumerate(self._instances):
            t = threading.Thread(target=self._work, args=(instance,), daemon=True,
                                 name=f"hal-serve-{self.name}-{i}")
            self._threads.append(t)
            t.start()

    def _depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._pending))

    def _work(self, instance: Any) -> None:
        while True:
            try:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return  # closing, and nothing left
                    batch = self._take()
                if batch:
                    try:
                        self._execute(instance, batch)
                    finally:
                        with self._cond:
                            self._busy -= 1
            except Exception as exc:  # noqa: BLE001 - a bug here must not hang the callers
                log.exception("the worker of model %r failed", self.name)
                self._fail_all(exc)
                return

    def _drop_done(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()

    def _rows(self, key: tuple) -> int:
        return sum(it.rows for it in self._pending if it.key == key and not it.future.done())

    def _take(self) -> list[_Item]:
        """With the lock held: the next batch, the oldest live request and, when batching,
        those queued behind it that fit it (waiting up to ``max_delay_s`` for more)."""
        self._drop_done()
        if not self._pending:
            return []
        if self.batching and self.max_delay_s > 0:
            deadline = self._pending[0].arrived + self.max_delay_s
            while not self._closing and self._rows(self._pending[0].key) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                self._drop_done()
                if not self._pending:
                    return []
        first = self._pending.popleft()
        batch, rows = [first], first.rows
        limit = self._share(first) if self.batching else 0
        if self.batching and rows < limit:
            keep: collections.deque[_Item] = collections.deque()
            for it in self._pending:
                if it.future.done():
                    continue
                if it.key == first.key and rows + it.rows <= limit:
                    batch.append(it)
                    rows += it.rows
                else:
                    keep.append(it)
            self._pending = keep
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._pending))
        self._busy += 1
        if self._pending and self._busy < len(self._instances):
            self._cond.notify()  # an idle instance takes the rest
        return batch

    def _share(self, first: _Item) -> int:
        """Rows this batch may take: ``max_batch``, or, with instances idle beside this one
        and batches slow enough to share (``SPLIT_ABOVE_S``), an even share of what is
        queued, so that one instance does not take everything while the others wait for the
        next arrivals (closed-loop clients send those only once answered)."""
        idle = len(self._instances) - self._busy
        if idle <= 1 or self._batch_s < SPLIT_ABOVE_S:
            return self.max_batch
        queued = first.rows + self._rows(first.key)
        return max(first.rows, min(self.max_batch, math.ceil(queued / idle)))

    def _execute(self, instance: Any, batch: list[_Item]) -> None:
        now = time.perf_counter()
        for it in batch:
            it.started = now
        try:
            results, compute_s = self._compute(instance, batch)
        except Exception as exc:  # one failure answers every request of the batch
            self._loop.call_soon_threadsafe(_answer, batch, None, exc)
            return
        self.batches += 1
        self._batch_s = compute_s if self.batches == 1 else 0.8 * self._batch_s + 0.2 * compute_s
        m = self._metrics
        if m is not None:  # before the answers: a caller reading /metrics next sees its batch
            m.compute_seconds.observe(compute_s)
            m.batch_size.observe(sum(it.rows for it in batch))
            for it in batch:
                m.queue_seconds.observe(it.started - it.arrived)
        self._loop.call_soon_threadsafe(_answer, batch, results, None)

    def _fail_all(self, exc: Exception) -> None:
        error = ServeError(500, f"the batcher of model {self.name!r} failed: "
                                f"{type(exc).__name__}: {exc}")
        with self._cond:
            self._closing = True
            batch, self._pending = list(self._pending), collections.deque()
        self._loop.call_soon_threadsafe(_answer, batch, None, error)

    def _compute(self, instance: Any, batch: list[_Item]) -> tuple[list, float]:
        """Concatenate, run, split at the callers' row offsets."""
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


def _answer(batch: list[_Item], results: list | None, exc: Exception | None) -> None:
    """On the event loop: each caller's rows, or the batch's error."""
    for i, it in enumerate(batch):
        if it.future.done():
            continue  # timed out or gone
        if exc is not None:
            it.future.set_exception(exc)
        else:
            it.future.set_result(results[i])
