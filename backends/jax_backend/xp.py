"""jax as the numpy-like module of the shared kernels (``cx.xp``): ``jax.numpy``, plus the
functions numpy lacks (``backends/common/kernels`` lists them) from where jax keeps them,
and gathers that clip their indices (the kernels made them non-negative already) instead of
filling out-of-range ones."""

from __future__ import annotations

from hal.backends.common.frameworks import lookup
from hal.backends.jax_backend.framework import jax, jnp, lax

#: where jax keeps what numpy lacks, by the name the shared kernels call
FROM_JAX = {
    "erf": "scipy.special.erf", "sigmoid": "nn.sigmoid", "soft_sign": "nn.soft_sign",
    "softplus": "nn.softplus", "relu": "nn.relu", "gelu": "nn.gelu",
    "logsumexp": "nn.logsumexp", "rsqrt": "lax.rsqrt", "stop_gradient": "lax.stop_gradient",
}


def __getattr__(name: str):
    return lookup(jax, FROM_JAX[name]) if name in FROM_JAX else getattr(jnp, name)


def trunc_divide(a, b):
    a, b = jnp.broadcast_arrays(a, b)
    return lax.div(a, b.astype(a.dtype))


def take(x, indices, axis: int):
    return jnp.take(x, indices, axis=axis, mode="clip")


def take_along_axis(x, indices, axis: int):
    return jnp.take_along_axis(x, indices, axis=axis, mode="clip")
