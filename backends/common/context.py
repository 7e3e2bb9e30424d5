"""What a framework plugs into the shared lowering: ``Context``.

A backend subclasses it once: its numpy-like module, how it casts, how it computes at trace
time, how a segment's outputs leave. The shared kernels and the trace interpreter use only
these; the low-precision rule (reductions in fp32, results back in the compute type) is
written here once.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import numpy as np

from hal.backends.common.table import KernelTable

HOST_TYPES = (np.ndarray, np.generic, int, float, bool)


def numpy_dtype(x: Any) -> np.dtype:
    """The numpy dtype of a framework value or a host value."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        return np.asarray(x).dtype
    return np.dtype(getattr(dt, "as_numpy_dtype", dt))


class Context:
    """How a segment computes in one framework.

    ``xp`` is the framework's numpy-like module: the shared kernels call it with numpy's
    names and signatures (``xp.where``, ``xp.sum(x, axis, keepdims=...)``).
    """

    #: the backend's name, for messages
    backend: str = ""
    #: the framework's numpy-like module
    xp: Any = None
    #: training-mode randomness (Dropout's masks): a ``RandomSource`` set on the trace's own
    #: copy of the context by ``hal.backends.common.training``; None when compiling inference
    random: Any = None

    def __init__(self, table: KernelTable, low: Any = None):
        self.table = table
        #: the low-precision compute dtype (bf16/fp16), or None for fp32
        self.low = low

    # -- what each framework supplies -------------------------------------------------
    def cast(self, x: Any, dtype: Any) -> Any:
        """``x`` (a framework value, or numpy) as a framework value of ``dtype``."""
        raise NotImplementedError

    def host(self, value: Any) -> np.ndarray:
        """A framework value computed at trace time, as numpy."""
        return np.asarray(value)

    def compile_time(self) -> ContextManager:
        """Where kernels run eagerly, outside the trace, to give numpy values."""
        return contextlib.nullcontext()

    def output(self, value: Any, dtype: Any) -> Any:
        """A segment output: a framework value of ``dtype`` (the model's type)."""
        raise NotImplementedError

    # -- written once ---------------------------------------------------------------------
    def kernel(self, op: str) -> Callable:
        return self.table.kernels[op]

    def const(self, value: Any, like: Any) -> Any:
        """A host value (numpy, Python scalar) in the dtype of framework value ``like``."""
        if isinstance(value, HOST_TYPES):
            return self.cast(np.asarray(value), like.dtype)
        return value

    def consts(self, values: tuple) -> list:
        """``values`` with each host value in the dtype of the first framework value."""
        like = next((v for v in values if not isinstance(v, HOST_TYPES)), None)
        if like is None:
            return list(values)
        return [self.const(v, like) for v in values]

    def enter(self, x: Any) -> Any:
        """A graph input as computed: fp32 inputs in the low-precision type when there is one."""
        if self.low is not None and x.dtype == self.xp.float32:
            return self.cast(x, self.low)
        return x

    def wide(self, x: Any) -> Any:
        """``x`` in fp32 for reductions that lose too much in bf16/fp16."""
        if self.low is not None and x.dtype == self.low:
            return self.cast(x, self.xp.float32)
        return x

    def narrow(self, y: Any, like: Any) -> Any:
        """``y`` back in the dtype of ``like`` after a widened computation."""
        return self.cast(y, like.dtype) if y.dtype != like.dtype else y
