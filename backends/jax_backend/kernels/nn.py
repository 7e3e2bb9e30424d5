"""Matrix products, convolution and windowed pooling: jax's own kernels."""

from __future__ import annotations

import numpy as np

from hal.backends.jax_backend.framework import jnp, lax
from hal.backends.jax_backend.kernels import kernel
from hal.oracle.nn import conv_pads, pool_pads


@kernel("MatMul")
def matmul(cx, a, b):
    y = jnp.matmul(a, b, precision=cx.precision, preferred_element_type=cx.acc(a))
    return cx.narrow(y, a)


@kernel("Gemm")
def gemm(cx, a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    y = jnp.matmul(a, b, precision=cx.precision, preferred_element_type=cx.acc(a))
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return cx.narrow(y, a)


@kernel("Einsum")
def einsum(cx, *xs, equation):
    y = jnp.einsum(equation, *xs, precision=cx.precision, preferred_element_type=cx.acc(xs[0]))
    return cx.narrow(y, xs[0])


@kernel("Conv")
def conv(cx, x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None):
    n = x.ndim - 2
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    padding = conv_pads(x.shape[2:], list(w.shape[2:]), strides, dilations, pads, auto_pad)
    y = lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilations,
                                 feature_group_count=group, precision=cx.precision,
                                 preferred_element_type=cx.acc(x))
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n)
    return cx.narrow(y, x)


def _pool_window(x, kernel_shape, strides, dilations):
    n = len(kernel_shape)
    return ((1, 1) + tuple(kernel_shape), (1, 1) + tuple(strides or [1] * n),
            (1, 1) + tuple(dilations or [1] * n))


@kernel("MaxPool", wanted=True)
def max_pool(cx, x, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None, wanted=(True,)):
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    pp = pool_pads(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    dims, st, dil = _pool_window(x, kernel_shape, strides, dilations)
    # numpy init values: jax sees a concrete max/add monoid and uses its differentiable
    # reduce_window_max/sum (a traced init value makes a generic, non-differentiable window)
    init = np.asarray(-np.inf if jnp.issubdtype(x.dtype, jnp.floating)
                      else jnp.iinfo(x.dtype).min, x.dtype)
    padding = [(0, 0), (0, 0)] + pp
    if len(wanted) < 2 or not wanted[1]:  # the Indices output is computed only when used
        return lax.reduce_window(x, init, lax.max, dims, st, padding, window_dilation=dil)
    # the Indices output: flat positions in the input, row- or column-major per storage_order
    shape = x.shape
    if storage_order:
        strides_ = np.ones(len(shape), np.int64)
        strides_[:2] = [np.prod(shape[1:]), np.prod(shape[2:])]
        for i in range(2, len(shape)):
            strides_[i] = np.prod(shape[2:i], dtype=np.int64)
        idx = sum(lax.broadcasted_iota(jnp.int64, shape, i) * int(strides_[i])
                  for i in range(len(shape)))
    else:
        idx = jnp.arange(int(np.prod(shape)), dtype=jnp.int64).reshape(shape)

    def pick(a, b):
        (av, ai), (bv, bi) = a, b
        take_a = (av > bv) | ((av == bv) & (ai < bi))
        return lax.select(take_a, av, bv), lax.select(take_a, ai, bi)

    big = jnp.asarray(np.iinfo(np.int64).max, jnp.int64)
    return lax.reduce_window((x, idx), (init, big), pick, dims, st, padding,
                             window_dilation=dil)


@kernel("AveragePool")
def average_pool(cx, x, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    n = len(kernel_shape)
    strides = list(strides or [1] * n)
    dilations = list(dilations or [1] * n)
    explicit = conv_pads(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad)
    pp = pool_pads(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    dims, st, dil = _pool_window(x, kernel_shape, strides, dilations)
    xw = cx.wide(x)
    sums = lax.reduce_window(xw, np.zeros((), xw.dtype), lax.add, dims, st,
                             [(0, 0), (0, 0)] + pp, window_dilation=dil)
    # how many elements each window averages: the real ones, plus explicit padding when
    # count_include_pad, never the extra ceil_mode padding; static, so computed in numpy
    ones = np.pad(np.ones((1, 1) + tuple(x.shape[2:])), [(0, 0), (0, 0)] + explicit,
                  constant_values=float(count_include_pad))
    ones = np.pad(ones, [(0, 0), (0, 0)] + [(0, hi - e) for (_, hi), (_, e) in zip(pp, explicit)])
    counts = lax.reduce_window(jnp.asarray(ones, xw.dtype), np.zeros((), xw.dtype), lax.add,
                               dims, st, [(0, 0)] * (n + 2), window_dilation=dil)
    return (sums / counts).astype(x.dtype)
