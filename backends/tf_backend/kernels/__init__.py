"""The TensorFlow kernels: ``KERNELS[op_type](cx, *inputs, **attributes) -> tensor | tuple``.

Kernels run while ``tf.function`` traces a segment, once per compile. Inputs are
tf tensors, numpy arrays for values known at trace time (initializers, shapes, axes), or
None for an omitted optional input; numpy weights become graph constants on the device.
Inputs that decide an output's *shape* are listed in ``STATIC_INPUTS``: the lowering makes
them numpy at trace time where it can.

``NHWC`` holds the channels-last variants of the layout-sensitive ops (Conv, pools,
BatchNormalization): TensorFlow's CPU kernels only run channels-last, so every conv runs
NHWC; the layout pass keeps tensors NHWC between such ops instead of transposing around
each one. This module imports tensorflow; only the backend's compile path imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.errors import BackendError

KERNELS: dict[str, Callable] = {}
#: channels-last kernels ``fn(cx, x_nhwc, *rest, **attrs) -> y_nhwc`` for 4-D inputs
NHWC: dict[str, Callable] = {}
#: op -> input positions whose values must be known when tracing (they fix shapes)
STATIC_INPUTS: dict[str, frozenset[int]] = {}


def kernel(*names: str, static: tuple[int, ...] = ()):
    def register(fn: Callable) -> Callable:
        for n in names:
            KERNELS[n] = fn
            if static:
                STATIC_INPUTS[n] = frozenset(static)
        return fn

    return register


def nhwc_kernel(*names: str):
    def register(fn: Callable) -> Callable:
        for n in names:
            NHWC[n] = fn
        return fn

    return register


@dataclass(frozen=True)
class Context:
    """How a segment computes: the low-precision dtype (or None for fp32)."""

    low: Any = None  # tf.bfloat16 / tf.float16, or None

    def wide(self, x):
        """``x`` upcast to fp32 for reductions that lose too much in bf16/fp16."""
        import tensorflow as tf

        if self.low is not None and getattr(x, "dtype", None) == self.low:
            return tf.cast(x, tf.float32)
        return x

    def narrow(self, y, like):
        """``y`` back to the dtype of ``like`` after a widened computation."""
        import tensorflow as tf

        return tf.cast(y, like.dtype) if y.dtype != like.dtype else y


def static(value: Any, op: str, what: str) -> np.ndarray | None:
    """The trace-time numpy value of a shape-deciding input, or a clear error."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, (int, float, list, tuple, np.generic)):
        return np.asarray(value)
    raise BackendError(f"tf cannot run {op}: its {what} input must be known when the model is "
                       f"compiled (a constant, or computed from static shapes), but it is "
                       f"computed from runtime data")


def ints(value: Any, op: str, what: str) -> list[int]:
    return [int(i) for i in np.asarray(static(value, op, what)).reshape(-1)]


def axes_list(axes: Any, rank: int, op: str) -> list[int] | None:
    a = static(axes, op, "axes")
    if a is None:
        return None
    return [int(i) % rank if rank else 0 for i in np.asarray(a).reshape(-1)]


def dims(x) -> list:
    """The shape of ``x`` with a scalar tensor standing in for each unknown (dynamic) dim."""
    import tensorflow as tf

    static_shape = x.shape.as_list() if hasattr(x.shape, "as_list") else list(x.shape)
    if all(d is not None for d in static_shape):
        return static_shape
    dyn = tf.shape(x)
    return [d if d is not None else dyn[i] for i, d in enumerate(static_shape)]


from hal.backends.tf_backend.kernels import (  # noqa: F401, E402 - registers the kernels
    elementwise,
    fused,
    nn,
    tensor,
)
