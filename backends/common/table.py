"""A tracing backend's kernels by op, and the backend's op list read from them.

A kernel is ``fn(cx, *inputs, **attributes) -> value | tuple``: ``cx`` is the backend's
``Context``; inputs are framework values while tracing, numpy arrays for values known at
trace time, or None for an omitted optional input. Inputs that decide an output's *shape*
(a Reshape's shape, a Slice's starts) are registered as ``static``: the lowering makes them
numpy at trace time (``static_value`` reads them).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hal.errors import BackendError
from hal.ir.schemas import HAL_DOMAIN, ONNX_DOMAINS


class KernelTable:
    """Kernels by op type; ``include`` copies the kernels of other tables (the shared ones)
    in first, so a backend's own registration of an op replaces the shared one."""

    def __init__(self, *include: KernelTable):
        self.kernels: dict[str, Callable] = {}
        #: op -> input positions whose values must be known while tracing (they fix shapes)
        self.static_inputs: dict[str, frozenset[int]] = {}
        #: ops whose kernel is told which outputs are used (``wanted``, one bool each)
        self.wants_outputs: set[str] = set()
        self._hal: set[str] = set()
        for table in include:
            self.kernels.update(table.kernels)
            self.static_inputs.update(table.static_inputs)
            self.wants_outputs |= table.wants_outputs
            self._hal |= table._hal

    def kernel(self, *names: str, static: tuple[int, ...] = (), domain: str = "",
               wanted: bool = False):
        """Register the decorated function as the kernel of ``names`` (of ``domain``).

        ``wanted``: the kernel computes costly extra outputs only when used (MaxPool's
        Indices), so it receives ``wanted=[bool per output]``.
        """
        if domain != HAL_DOMAIN and domain not in ONNX_DOMAINS:
            raise ValueError(f"kernels are ONNX or {HAL_DOMAIN} ops, not {domain!r}")

        def register(fn: Callable) -> Callable:
            for name in names:
                self.kernels[name] = fn
                self.static_inputs.pop(name, None)
                self.wants_outputs.discard(name)
                if static:
                    self.static_inputs[name] = frozenset(static)
                if wanted:
                    self.wants_outputs.add(name)
                if domain == HAL_DOMAIN:
                    self._hal.add(name)
            return fn

        return register

    @property
    def ops(self) -> frozenset[str]:
        """The ONNX op types this table runs."""
        return frozenset(self.kernels) - self._hal

    @property
    def hal_ops(self) -> frozenset[str]:
        """HAL's own ops (domain ``ai.hal``) this table runs."""
        return frozenset(self._hal)

    def lookup(self, domain: str, op_type: str) -> Callable | None:
        if domain in ONNX_DOMAINS and op_type in self.ops:
            return self.kernels[op_type]
        if domain == HAL_DOMAIN and op_type in self._hal:
            return self.kernels[op_type]
        return None


def static_value(value: Any, op: str, what: str) -> np.ndarray | None:
    """The trace-time numpy value of a shape-deciding input, or a clear error."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, (int, float, list, tuple, np.generic)):
        return np.asarray(value)
    raise BackendError(f"{op}'s {what} input must be known when the model is compiled (a "
                       f"constant, or computed from static shapes), but it is computed from "
                       f"runtime data; tracing backends need it to fix shapes")


def ints(value: Any, op: str, what: str) -> list[int]:
    return [int(i) for i in np.asarray(static_value(value, op, what)).reshape(-1)]


def axes_list(axes: Any, rank: int, op: str) -> list[int] | None:
    a = static_value(axes, op, "axes")
    if a is None:
        return None
    return [int(i) % rank if rank else 0 for i in np.asarray(a).reshape(-1)]
