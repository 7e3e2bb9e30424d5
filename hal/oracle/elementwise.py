"""Elementwise math, activations, reductions and matrix products."""

from __future__ import annotations

import functools
import math

import numpy as np

from hal.oracle import op


def _same(x, y):
    return np.asarray(y).astype(np.asarray(x).dtype, copy=False)


@op("Add")
def add(a, b): return _same(a, a + b)
@op("Sub")
def sub(a, b): return _same(a, a - b)
@op("Mul")
def mul(a, b): return _same(a, a * b)


@op("Div")
def div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)
    return _same(a, a / b)


@op("Relu")
def relu(x): return np.maximum(x, 0).astype(x.dtype)
@op("LeakyRelu")
def leaky_relu(x, alpha=0.01): return np.where(x >= 0, x, x * alpha).astype(x.dtype)
@op("Sigmoid")
def sigmoid(x): return _same(x, 1.0 / (1.0 + np.exp(-x)))
@op("Tanh")
def tanh(x): return np.tanh(x)
@op("Exp")
def exp(x): return np.exp(x)
@op("Log")
def log(x): return np.log(x)
@op("Sqrt")
def sqrt(x): return np.sqrt(x)
@op("Neg")
def neg(x): return np.negative(x)
@op("Abs")
def abs_(x): return np.abs(x)
@op("Identity")
def identity(x): return x


@op("Gelu")
def gelu(x, approximate="none"):
    if approximate == "tanh":
        y = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    else:
        erf = np.vectorize(math.erf, otypes=[np.float64])
        y = 0.5 * x * (1 + erf(x.astype(np.float64) / np.sqrt(2)))
    return _same(x, y)


@op("Clip")
def clip(x, lo=None, hi=None):
    y = x
    if lo is not None:
        y = np.maximum(y, lo)
    if hi is not None:
        y = np.minimum(y, hi)
    return _same(x, y)


@op("Softmax")
def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return _same(x, e / np.sum(e, axis=axis, keepdims=True))


@op("LogSoftmax")
def log_softmax(x, axis=-1):
    m = x - np.max(x, axis=axis, keepdims=True)
    return _same(x, m - np.log(np.sum(np.exp(m), axis=axis, keepdims=True)))


@op("MatMul")
def matmul(a, b): return np.matmul(a, b)


@op("Gemm")
def gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.T if transA else a
    b = b.T if transB else b
    y = alpha * (a @ b)
    if c is not None:
        y = y + beta * c
    return _same(a, y)


def _axes(axes, x, noop_with_empty_axes):
    if axes is None or len(axes) == 0:
        return None if not noop_with_empty_axes else ()
    return tuple(int(a) % x.ndim for a in np.asarray(axes).reshape(-1))


@op("ReduceMean")
def reduce_mean(x, axes=None, keepdims=1, noop_with_empty_axes=0):
    ax = _axes(axes, x, noop_with_empty_axes)
    if ax == ():
        return x
    return _same(x, np.mean(x, axis=ax, keepdims=bool(keepdims)))


@op("Sum")
def sum_(*xs):
    return _same(xs[0], functools.reduce(np.add, xs))
