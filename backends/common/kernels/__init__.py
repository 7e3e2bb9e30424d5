"""Kernels written once for every tracing backend, against ``cx.xp``.

``cx.xp`` is the backend's framework as a numpy-like module: numpy's names and signatures
(``where``, ``sum(x, axis, keepdims=)``, ``take(x, i, axis=)``, ...) plus a few numpy lacks,
named as in ``jax.nn`` / ``jax.lax``: ``erf``, ``sigmoid``, ``soft_sign``, ``softplus``,
``relu``, ``gelu``, ``logsumexp``, ``rsqrt``, ``trunc_divide``, ``stop_gradient``. Host values
(numpy) meet framework values through ``cx.const``.

``COMMON`` holds the ONNX kernels every tracing backend takes (a backend registers its own
kernel of an op to replace one); ``FUSED`` holds HAL's fused ops for the backends whose
flows fuse activations.
"""

from __future__ import annotations

from hal.backends.common.table import KernelTable

COMMON = KernelTable()
FUSED = KernelTable()
kernel = COMMON.kernel

from hal.backends.common.kernels import (  # noqa: E402,F401
    elementwise, fused, loss, nn, quant, reduce, tensor)
