"""Matrix products, convolution and pooling: tf's own kernels.

Convolutions and pools are written channels-last (``CHANNELS_LAST``); their channels-first
ONNX kernels transpose around them. Weights that are numpy at trace time are transposed
and cast in numpy, once, so the traced graph holds them ready as constants.
"""

from __future__ import annotations

import types

import numpy as np

from hal.backends.common.kernels.fused import activate
from hal.backends.common.kernels.nn import batch_norm_along
from hal.backends.tf_backend.framework import tf
from hal.backends.tf_backend.kernels import CHANNELS_LAST, channels_last, kernel
from hal.oracle.nn import conv_pads, pool_pads


def to_last(x):
    """NC... -> N...C"""
    r = x.shape.rank
    return tf.transpose(x, [0, *range(2, r), 1])


def to_first(x):
    """N...C -> NC..."""
    r = x.shape.rank
    return tf.transpose(x, [0, r - 1, *range(1, r - 1)])


def _cast_like(v, like):
    if isinstance(v, np.ndarray):
        return v.astype(like.dtype.as_numpy_dtype, copy=False)
    return tf.cast(v, like.dtype) if v.dtype != like.dtype else v


def _spatial(x) -> list[int]:
    sp = x.shape.as_list()[1:-1]
    if any(d is None for d in sp):
        raise ValueError(f"spatial dims must be static, got {x.shape}")
    return sp


# -- products ---------------------------------------------------------------------------
@kernel("MatMul")
def matmul(cx, a, b):
    like = a if isinstance(a, tf.Tensor) else b
    a, b = _cast_like(a, like), _cast_like(b, like)
    ra, rb = len(a.shape), len(b.shape)
    if min(ra, rb) == 1:
        return tf.experimental.numpy.matmul(a, b)
    if ra > 2 and rb == 2:  # x @ W: one 2-D product, no broadcast copies
        return tf.tensordot(a, b, 1)
    return tf.linalg.matmul(a, b)


@kernel("Gemm")
def gemm(cx, a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    if isinstance(b, np.ndarray) and transB:
        b, transB = np.ascontiguousarray(b.T), 0  # transposed once, at compile time
    b = _cast_like(b, a)
    y = tf.linalg.matmul(a, b, transpose_a=bool(transA), transpose_b=bool(transB))
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        c = _cast_like(c, a)
        y = y + (c * beta if beta != 1.0 else c)
    return y


@kernel("Einsum")
def einsum(cx, *xs, equation):
    like = next(x for x in xs if isinstance(x, tf.Tensor))
    return tf.einsum(equation.replace(" ", ""), *[_cast_like(x, like) for x in xs])


# -- convolution ------------------------------------------------------------------------
def _conv_filter(w, group: int, depthwise: bool):
    """ONNX [M, C/g, *k] -> TF [*k, C/g, M] (or [kh, kw, C, M/C] for depthwise)."""
    n = len(w.shape) - 2
    lib = np if isinstance(w, np.ndarray) else tf
    if depthwise:
        m, _, kh, kw = w.shape
        mult = m // group
        w4 = lib.reshape(w, (group, mult, kh, kw))
        return lib.transpose(w4, (2, 3, 0, 1))
    return lib.transpose(w, (*range(2, 2 + n), 1, 0))


@channels_last("Conv")
def conv_nhwc(cx, x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
              pads=None, strides=None):
    n = x.shape.rank - 2
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    k = list(w.shape[2:])
    pp = conv_pads(_spatial(x), k, strides, dilations, pads, auto_pad)
    if any(lo or hi for lo, hi in pp):
        x = tf.pad(x, [[0, 0], *[list(p) for p in pp], [0, 0]])
    c = x.shape[-1]
    depthwise = n == 2 and group > 1 and group == c
    f = _cast_like(_conv_filter(w, group, depthwise), x)
    # TF's CPU kernels refuse strides together with dilations (and unequal depthwise
    # strides): run those at stride 1 and subsample, which is exact
    sub = None
    if any(d > 1 for d in dilations) and any(s > 1 for s in strides) or \
            (depthwise and len(set(strides)) > 1):
        sub, strides = strides, [1] * n
    if depthwise:
        y = tf.nn.depthwise_conv2d(x, f, [1, *strides, 1], "VALID", dilations=dilations)
    elif group == 1 or n == 2:
        y = tf.nn.convolution(x, f, strides, "VALID", dilations=dilations)
    else:  # grouped 1-D/3-D: one convolution per group
        xs = tf.split(x, group, axis=-1)
        fs = tf.split(f, group, axis=-1)
        y = tf.concat([tf.nn.convolution(a, g, strides, "VALID", dilations=dilations)
                       for a, g in zip(xs, fs)], axis=-1)
    if sub is not None:
        y = y[(slice(None), *[slice(None, None, s) for s in sub], slice(None))]
    if b is not None:
        y = tf.nn.bias_add(y, _cast_like(b, y))
    return y


# -- pooling ----------------------------------------------------------------------------
def _pool_geometry(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    sp = _spatial(x)
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    shim = types.SimpleNamespace(shape=(0, 0, *sp))
    explicit = conv_pads(sp, kernel_shape, strides, dilations, pads, auto_pad)
    pp = pool_pads(shim, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    return sp, strides, dilations, explicit, pp


def _windows(x, kernel_shape, strides, dilations, out):
    """Each kernel offset's strided slice of the (padded) input: exact for any dilation."""
    for offset in np.ndindex(*kernel_shape):
        idx = [slice(None)]
        for i, o in enumerate(offset):
            start = o * dilations[i]
            idx.append(slice(start, start + (out[i] - 1) * strides[i] + 1, strides[i]))
        yield x[tuple(idx + [slice(None)])]


def _out_sizes(padded, kernel_shape, strides, dilations):
    return [(p - ((k - 1) * d + 1)) // s + 1
            for p, k, s, d in zip(padded, kernel_shape, strides, dilations)]


@channels_last("MaxPool")
def max_pool_nhwc(cx, x, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None,
                  pads=None, storage_order=0, strides=None):
    sp, strides, dilations, _, pp = _pool_geometry(x, kernel_shape, strides, dilations, pads,
                                                   auto_pad, ceil_mode)
    if any(lo or hi for lo, hi in pp):
        fill = x.dtype.min if x.dtype.is_integer else -np.inf
        x = tf.pad(x, [[0, 0], *[list(p) for p in pp], [0, 0]], constant_values=fill)
    if all(d == 1 for d in dilations) and x.dtype.is_floating and len(kernel_shape) <= 3:
        return tf.nn.max_pool(x, list(kernel_shape), strides, "VALID")
    out = _out_sizes([s + lo + hi for s, (lo, hi) in zip(sp, pp)], kernel_shape, strides,
                     dilations)
    win = list(_windows(x, kernel_shape, strides, dilations, out))
    y = win[0]
    for w in win[1:]:
        y = tf.maximum(y, w)
    return y


@channels_last("AveragePool")
def average_pool_nhwc(cx, x, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0,
                      dilations=None, kernel_shape=None, pads=None, strides=None):
    sp, strides, dilations, explicit, pp = _pool_geometry(x, kernel_shape, strides, dilations,
                                                          pads, auto_pad, ceil_mode)
    xw = cx.wide(x)
    padded = any(lo or hi for lo, hi in pp)
    if padded:
        xw = tf.pad(xw, [[0, 0], *[list(p) for p in pp], [0, 0]])
    full = [s + lo + hi for s, (lo, hi) in zip(sp, pp)]
    out = _out_sizes(full, kernel_shape, strides, dilations)
    if all(d == 1 for d in dilations) and len(kernel_shape) <= 3:
        y = tf.nn.avg_pool(xw, list(kernel_shape), strides, "VALID")  # sum / prod(kernel)
        if not padded:
            return cx.narrow(y, x)
        scale = float(np.prod(kernel_shape))
    else:
        win = list(_windows(xw, kernel_shape, strides, dilations, out))
        y = tf.add_n(win) if len(win) > 1 else win[0]
        scale = 1.0
    # how many elements each window averages: the real ones, plus explicit padding when
    # count_include_pad, never the extra ceil_mode padding; static, computed in numpy
    ones = np.pad(np.ones(sp), explicit, constant_values=float(count_include_pad))
    ones = np.pad(ones, [(0, hi - e) for (_, hi), (_, e) in zip(pp, explicit)])
    counts = sum(w for w in _np_windows(ones, kernel_shape, strides, dilations, out))
    factor = (scale / counts).astype(np.float32)[None, ..., None]
    return cx.narrow(y * tf.constant(factor, xw.dtype), x)


def _np_windows(a, kernel_shape, strides, dilations, out):
    for offset in np.ndindex(*kernel_shape):
        idx = []
        for i, o in enumerate(offset):
            start = o * dilations[i]
            idx.append(slice(start, start + (out[i] - 1) * strides[i] + 1, strides[i]))
        yield a[tuple(idx)]


@channels_last("GlobalAveragePool")
def global_average_pool_nhwc(cx, x):
    return cx.narrow(tf.reduce_mean(cx.wide(x), list(range(1, x.shape.rank - 1)), keepdims=True),
                     x)


@channels_last("GlobalMaxPool")
def global_max_pool_nhwc(cx, x):
    return tf.reduce_max(x, list(range(1, x.shape.rank - 1)), keepdims=True)


@channels_last("BatchNormalization")
def batch_norm_nhwc(cx, x, scale, bias, mean, var, epsilon=1e-5, momentum=0.9, training_mode=0):
    return batch_norm_along(cx, -1, x, scale, bias, mean, var, epsilon, momentum, training_mode)


@channels_last("FusedConv")
def fused_conv_nhwc(cx, x, w, b=None, activation=None, activation_params=None, **conv):
    return activate(cx, conv_nhwc(cx, x, w, b, **conv), activation, activation_params)


def _channels_first(name: str):
    """The ONNX (channels-first) kernel: transpose around the channels-last one."""
    fn = CHANNELS_LAST.kernels[name]

    def k(cx, x, *rest, **attrs):
        y = fn(cx, to_last(x), *rest, **attrs)
        if isinstance(y, tuple):
            return (to_first(y[0]), *y[1:])
        return to_first(y)

    kernel(name)(k)


for _name in ("Conv", "MaxPool", "AveragePool"):
    _channels_first(_name)
