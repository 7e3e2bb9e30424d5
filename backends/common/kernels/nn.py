"""Global pooling and normalization, channels-first as ONNX lays them out.

Convolutions, windowed pools and matrix products are each backend's own: they are where the
frameworks differ (precision arguments, layouts, kernels that exist on one CPU and not on
another).
"""

from __future__ import annotations

import functools

import numpy as np

from hal.backends.common.context import HOST_TYPES, numpy_dtype
from hal.backends.common.kernels import kernel


@kernel("GlobalAveragePool")
def global_average_pool(cx, x):
    axes = tuple(range(2, len(x.shape)))
    return cx.narrow(cx.xp.mean(cx.wide(x), axis=axes, keepdims=True), x)


@kernel("GlobalMaxPool")
def global_max_pool(cx, x):
    return cx.xp.max(x, axis=tuple(range(2, len(x.shape))), keepdims=True)


@kernel("BatchNormalization")
def batch_norm(cx, x, scale, bias, mean, var, epsilon=1e-5, momentum=0.9, training_mode=0):
    return batch_norm_along(cx, 1, x, scale, bias, mean, var, epsilon, momentum, training_mode)


def batch_norm_along(cx, axis: int, x, scale, bias, mean, var, epsilon, momentum,
                     training_mode):
    """BatchNormalization with channels on ``axis`` (1, or -1 for channels-last)."""
    rank = len(x.shape)
    axis %= rank
    shape = [-1] + [1] * (rank - 1 - axis)  # broadcasts along the channel axis
    xw = cx.wide(x)
    wide = numpy_dtype(xw)
    if training_mode:
        return _batch_norm_training(cx, axis, shape, x, xw, scale, bias, mean, var, epsilon,
                                    momentum)
    if all(isinstance(v, HOST_TYPES) for v in (scale, bias, mean, var)):
        # folded to one multiply-add, in float64 numpy, at compile time
        scale, bias, mean, var = (np.asarray(v, np.float64) for v in (scale, bias, mean, var))
        inv = scale / np.sqrt(var + epsilon)
        shift = bias - mean * inv
        inv, shift = inv.astype(wide).reshape(shape), shift.astype(wide).reshape(shape)
        return cx.narrow(xw * cx.const(inv, xw) + cx.const(shift, xw), x)
    scale, bias, mean, var = (cx.xp.reshape(cx.cast(v, wide), shape)
                              for v in (scale, bias, mean, var))
    inv = scale / cx.xp.sqrt(var + epsilon)
    return cx.narrow((xw - mean) * inv + bias, x)


def _batch_norm_training(cx, axis, shape, x, xw, scale, bias, mean, var, epsilon, momentum):
    """Normalized by the batch's statistics; also the updated running statistics."""
    xp = cx.xp
    axes = tuple(a for a in range(len(x.shape)) if a != axis)
    bm, bv = xp.mean(xw, axis=axes), xp.var(xw, axis=axes)
    wide = numpy_dtype(xw)
    scale, bias = (xp.reshape(cx.cast(v, wide), shape) for v in (scale, bias))
    y = (xw - xp.reshape(bm, shape)) * xp.rsqrt(xp.reshape(bv, shape) + epsilon) * scale + bias
    running_mean = cx.cast(mean, wide) * momentum + bm * (1 - momentum)
    running_var = cx.cast(var, wide) * momentum + bv * (1 - momentum)
    return (cx.narrow(y, x), cx.cast(running_mean, numpy_dtype(mean)),
            cx.cast(running_var, numpy_dtype(var)))


@kernel("LayerNormalization")
def layer_norm(cx, x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1):
    rank = len(x.shape)
    axes = tuple(range(axis % rank, rank))
    dtype = numpy_dtype(x)
    xf = cx.cast(x, np.float32) if stash_type == 1 and dtype != np.float64 else x
    stash = numpy_dtype(xf)
    mean = cx.xp.mean(xf, axis=axes, keepdims=True)
    d = xf - mean
    inv = cx.xp.rsqrt(cx.xp.mean(d * d, axis=axes, keepdims=True) + epsilon)
    y = d * inv * cx.cast(scale, stash)
    if bias is not None:
        y = y + cx.cast(bias, stash)
    return cx.cast(y, dtype), mean, inv


@kernel("InstanceNormalization")
def instance_norm(cx, x, scale, bias, epsilon=1e-5):
    xp = cx.xp
    axes = tuple(range(2, len(x.shape)))
    xw = cx.wide(x)
    mean = xp.mean(xw, axis=axes, keepdims=True)
    var = xp.var(xw, axis=axes, keepdims=True)
    shape = [1, -1] + [1] * (len(x.shape) - 2)
    scale, bias = (xp.reshape(cx.cast(v, numpy_dtype(xw)), shape) for v in (scale, bias))
    return cx.narrow((xw - mean) * xp.rsqrt(var + epsilon) * scale + bias, x)


@kernel("LRN")
def lrn(cx, x, size, alpha=0.0001, beta=0.75, bias=1.0):
    xw = cx.wide(x)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = cx.xp.pad(xw * xw, [(0, 0), (lo, hi)] + [(0, 0)] * (len(x.shape) - 2))
    c = x.shape[1]
    window = functools.reduce(cx.xp.add, [squares[:, i:i + c] for i in range(size)])
    return cx.narrow(xw / (bias + alpha / size * window) ** beta, x)
