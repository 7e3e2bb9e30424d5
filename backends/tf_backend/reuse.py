"""Traced segments kept for the next compile of the same segment.

TensorFlow keeps every XLA executable it compiled for the life of the process and never
evicts one (``tensorflow/compiler/jit/device_compilation_cache.h``). Its cache is keyed by
the function's name, and each new ``tf.function`` has a new name: every ``hal.compile`` on
``cpu@tf`` with XLA added its executable for good, about 3.9 MiB for lenet, even when it
compiled the same model again. Its Python API has no call that empties that cache
(``context().clear_kernel_cache()`` empties another one: measured, lenet still grew as much).

So an identical segment (same graph, weights, layout, precision, XLA choice and device)
takes the ``TracedSegment`` compiled before instead of tracing a new function, and XLA finds
its executable: a server reloading a model, or a loop compiling one, stays flat. A segment
that differs in anything, weights included, is traced anew and still adds its executable to
TensorFlow's cache. Weights stay constants of the function: as arguments, models differing
only in weights would share one executable, but every call would pass them anew and
transpose the filters in the graph (measured with XLA: lenet b1 +14 to +48 % per call,
resnet_lite b1 +6 %).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Callable

import onnx_ir as ir

#: released segments kept at most, newest first (one in use by an executable stays usable
#: when it drops out; the next compile of it traces anew)
MAX_SEGMENTS = 8
#: weights the kept segments may hold together beyond the newest one, in bytes
MAX_WEIGHT_BYTES = 1 << 30


def segment_key(model: ir.Model, *choices: Any) -> str:
    """A content hash of ``model`` (graph and weights) and the compile ``choices``."""
    h = hashlib.sha256(ir.to_proto(model).SerializeToString(deterministic=True))
    h.update(repr(choices).encode())
    return h.hexdigest()


class SegmentCache:
    """The segments compiled last, by key: at most ``max_segments``, and no more than
    ``max_bytes`` of weights (``size``) beyond the newest. Safe to share between threads;
    two threads building the same key at once both build, and the later one is kept."""

    def __init__(self, max_segments: int = MAX_SEGMENTS, max_bytes: int = MAX_WEIGHT_BYTES,
                 size: Callable[[Any], int] = lambda segment: segment.weight_bytes):
        self.max_segments = max_segments
        self.max_bytes = max_bytes
        self._size = size
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, build: Callable[[], Any]) -> Any:
        """The segment kept under ``key``, or ``build()``'s, kept from now on."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[0]
        segment = build()  # tracing takes a while: not under the lock
        with self._lock:
            self._entries[key] = (segment, self._size(segment))
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and (
                    len(self._entries) > self.max_segments
                    or sum(n for _, n in self._entries.values()) > self.max_bytes):
                self._entries.popitem(last=False)
        return segment

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def segments(self) -> list:
        """The kept segments, oldest first."""
        with self._lock:
            return [segment for segment, _ in self._entries.values()]

    def clear(self) -> None:
        """Drop every kept segment (executables using one keep it)."""
        with self._lock:
            self._entries.clear()


#: the tf backend's segments, shared by every cpu/gpu/tpu device of the process
SEGMENTS = SegmentCache()
