"""jax, imported on first use.

Before that first import HAL asks jax not to preallocate most of a GPU's memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``, unless the user set it), so torch or TensorFlow in
the same process still get memory, and keeps jax's start-up lines off stderr
(``HAL_VERBOSE=1`` shows them). The module handles below import jax when first used, so
the kernel modules (and the op list read from them) load without it.
"""

from __future__ import annotations

import types

from hal.backends.common.frameworks import LazyModule, import_quietly


def import_jax() -> types.ModuleType:
    return import_quietly("jax", env={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})


jax = LazyModule("jax", import_jax)
jnp = LazyModule("jax.numpy", import_jax)
lax = LazyModule("jax.lax", import_jax)
special = LazyModule("jax.scipy.special", import_jax)
