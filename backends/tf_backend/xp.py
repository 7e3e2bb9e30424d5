"""TensorFlow as the numpy-like module of the shared kernels (``cx.xp``).

Names numpy and ``tf.math`` share (``exp``, ``maximum``, ``equal``, ``cumsum``, ...) come from
``tf.math``, others from where ``FROM_TF`` says; what differs from numpy's signature is
defined here, with the functions numpy lacks (``backends/common/kernels`` lists them).
Sizes may be tf scalars where a dim is known only at run time.
"""

from __future__ import annotations

import numpy as np

from hal.backends.common.frameworks import lookup
from hal.backends.tf_backend.framework import tf

#: numpy's names for TensorFlow's functions of the same meaning, where ``tf.math`` lacks them
FROM_TF = {
    "arcsin": "math.asin", "arccos": "math.acos", "arctan": "math.atan",
    "arcsinh": "math.asinh", "arccosh": "math.acosh", "arctanh": "math.atanh",
    "isnan": "math.is_nan", "isinf": "math.is_inf", "remainder": "math.floormod",
    "trunc_divide": "truncatediv", "bitwise_not": "bitwise.invert",
    "bitwise_and": "bitwise.bitwise_and", "bitwise_or": "bitwise.bitwise_or",
    "bitwise_xor": "bitwise.bitwise_xor", "left_shift": "bitwise.left_shift",
    "right_shift": "bitwise.right_shift", "soft_sign": "nn.softsign", "relu": "nn.relu",
    "gelu": "nn.gelu", "logsumexp": "reduce_logsumexp", "sum": "reduce_sum", "mean": "reduce_mean",
    "prod": "reduce_prod", "var": "math.reduce_variance", "where": "where",
    "clip": "clip_by_value", "shape": "shape", "size": "size", "transpose": "transpose",
    "take": "gather", "tile": "tile", "float32": "float32", "int64": "int64",
    "stop_gradient": "stop_gradient",
}


def __getattr__(name: str):
    return lookup(tf, FROM_TF.get(name, "math." + name))


def _tensor(x):
    return x if isinstance(x, (tf.Tensor, tf.Variable)) else tf.constant(np.asarray(x))


def _axes(axis):
    return list(axis) if isinstance(axis, (tuple, list)) else axis


def _sizes(values: list):
    """A list of sizes, some of them tf scalars, as one int32 tensor (or the list itself)."""
    if all(isinstance(v, (int, np.integer)) for v in values):
        return [int(v) for v in values]
    return tf.stack([tf.cast(v, tf.int32) for v in values])


def fmod(a, b):
    if a.dtype in (tf.float16, tf.bfloat16):  # no CPU kernel; exact in fp32
        return tf.cast(tf.truncatemod(tf.cast(a, tf.float32), tf.cast(b, tf.float32)), a.dtype)
    return tf.truncatemod(a, b)


def power(x, y):
    x, y = _tensor(x), _tensor(y)
    if x.dtype.is_integer:  # tf has no integer pow kernel on every device: exact in float64
        return tf.cast(tf.pow(tf.cast(x, tf.float64), tf.cast(y, tf.float64)), x.dtype)
    return tf.pow(x, tf.cast(y, x.dtype))


def zeros(shape, dtype):
    return tf.zeros(shape, tf.as_dtype(dtype))


def zeros_like(x, dtype=None):
    return tf.zeros_like(x, None if dtype is None else tf.as_dtype(dtype))


def ones_like(x, dtype=None):
    return tf.ones_like(x, None if dtype is None else tf.as_dtype(dtype))


# -- reductions -----------------------------------------------------------------------------
def max(x, axis=None, keepdims=False):  # noqa: A001 - numpy's name
    if x.dtype == tf.bool:
        return tf.reduce_any(x, _axes(axis), keepdims=keepdims)
    return tf.reduce_max(x, _axes(axis), keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001 - numpy's name
    if x.dtype == tf.bool:
        return tf.reduce_all(x, _axes(axis), keepdims=keepdims)
    return tf.reduce_min(x, _axes(axis), keepdims=keepdims)


def argmax(x, axis, keepdims=False):
    i = tf.argmax(x, axis=axis, output_type=tf.int64)
    return tf.expand_dims(i, axis) if keepdims else i


def argmin(x, axis, keepdims=False):
    i = tf.argmin(x, axis=axis, output_type=tf.int64)
    return tf.expand_dims(i, axis) if keepdims else i


# -- shapes and data movement ---------------------------------------------------------------
def reshape(x, shape):
    return tf.reshape(x, _sizes(list(shape)) if isinstance(shape, (list, tuple)) else shape)


def broadcast_to(x, shape):
    return tf.broadcast_to(x, _sizes(list(shape)))


def flip(x, axis: int):
    return tf.reverse(x, [axis])


def concatenate(xs, axis=0):
    return tf.concat(list(xs), axis=axis)


def squeeze(x, axis):
    return tf.squeeze(x, _axes(axis))


def expand_dims(x, axes):
    for a in sorted(axes) if isinstance(axes, (tuple, list)) else [axes]:
        x = tf.expand_dims(x, a)
    return x


def take_along_axis(x, indices, axis: int):
    """Full coordinates for gather_nd: the index along ``axis``, the position elsewhere."""
    indices = tf.cast(_tensor(indices), tf.int64)
    grids = tf.meshgrid(*[tf.range(d, dtype=tf.int64)
                          for d in tf.unstack(tf.shape(indices, tf.int64))], indexing="ij")
    grids[axis] = indices
    return tf.gather_nd(x, tf.stack(grids, axis=-1))


def split(x, points, axis: int):
    bounds = [0, *points, x.shape[axis]]
    return tf.split(x, [b - a for a, b in zip(bounds, bounds[1:])], axis=axis)


def pad(x, widths, mode="constant", constant_values=0):
    paddings = [list(w) for w in widths]
    if mode == "constant":
        return tf.pad(x, paddings, constant_values=constant_values)
    if mode == "reflect":
        return tf.pad(x, paddings, mode="REFLECT")
    for axis, (lo, hi) in enumerate(paddings):  # edge and wrap: gathers along each axis
        if lo or hi:
            n = x.shape[axis]
            source = np.arange(-lo, n + hi)
            source = np.clip(source, 0, n - 1) if mode == "edge" else source % n
            x = tf.gather(x, source, axis=axis)
    return x
