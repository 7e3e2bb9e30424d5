"""The jax kernels: ``KERNELS[op_type](cx, *inputs, **attributes) -> array | tuple``.

Kernels run while ``jax.jit`` traces the segment (or eagerly at opt_level 0). Inputs are
jax arrays or tracers, numpy arrays for values known at trace time (initializers that
hold shapes or axes, results of ``Shape``), or None for an omitted optional input.
Inputs that decide an output's *shape* (a Reshape's shape, a Slice's starts, ...) are
listed in ``STATIC_INPUTS``: the lowering makes sure they are numpy at trace time.
This module imports jax; only the backend's compile path imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hal.errors import BackendError

KERNELS: dict[str, Callable] = {}
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


@dataclass(frozen=True)
class Context:
    """How a segment computes: matmul precision and the fp32-accumulation rule."""

    precision: Any  # jax.lax.Precision for dot/conv
    low: Any = None  # bf16/fp16 compute dtype, or None for fp32

    def acc(self, x) -> Any:
        """preferred_element_type for a dot/conv on ``x``: fp32 when computing in low precision."""
        import jax.numpy as jnp

        return jnp.float32 if self.low is not None and x.dtype == self.low else None

    def wide(self, x):
        """``x`` upcast to fp32 for reductions that lose too much in bf16/fp16."""
        import jax.numpy as jnp

        return x.astype(jnp.float32) if self.low is not None and x.dtype == self.low else x


def static(value: Any, op: str, what: str) -> np.ndarray | None:
    """The trace-time numpy value of a shape-deciding input, or a clear error."""
    if value is None or isinstance(value, np.ndarray):
        return value
    if isinstance(value, (int, float, list, tuple, np.generic)):
        return np.asarray(value)
    raise BackendError(f"jax cannot run {op}: its {what} input must be known when the model is "
                       f"compiled (a constant, or computed from shapes), but it is computed from "
                       f"runtime data; jax needs static shapes")


def axes_list(axes: Any, rank: int, op: str) -> list[int] | None:
    a = static(axes, op, "axes")
    if a is None:
        return None
    return [int(i) % rank if rank else 0 for i in np.asarray(a).reshape(-1)]


from hal.backends.jax_backend.kernels import elementwise, nn, tensor  # noqa: E402,F401
