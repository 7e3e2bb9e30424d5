"""How a segment computes in jax: the shared lowering's ``Context`` for jax."""

from __future__ import annotations

from typing import Any, ContextManager

from hal.backends.common.context import Context
from hal.backends.jax_backend import xp
from hal.backends.jax_backend.framework import jax, jnp


class JaxContext(Context):
    """jax.numpy as ``xp``; dots and convolutions at ``precision``, accumulating in fp32
    when computing in bf16/fp16."""

    backend = "jax"
    xp = xp

    def __init__(self, table, precision: Any, low: Any = None):
        super().__init__(table, low)
        self.precision = precision  # jax.lax.Precision for dot/conv

    def acc(self, x) -> Any:
        """preferred_element_type for a dot/conv on ``x``: fp32 when computing in low precision."""
        return jnp.float32 if self.low is not None and x.dtype == self.low else None

    def cast(self, x, dtype):
        return jnp.asarray(x).astype(dtype)

    def compile_time(self) -> ContextManager:
        return jax.ensure_compile_time_eval()

    def output(self, value, dtype):
        value = jnp.asarray(value)
        return value if dtype is None or value.dtype == dtype else value.astype(dtype)
