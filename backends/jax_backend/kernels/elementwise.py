"""Elementwise math, activations, comparisons, softmax and reductions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hal.backends.jax_backend.kernels import axes_list, kernel, static


def _dtype(x):
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _is_int(x) -> bool:
    return jnp.issubdtype(_dtype(x), jnp.integer)


def _unary(name: str, fn):
    kernel(name)(lambda cx, x: fn(x))


for _name, _fn in {
    "Abs": jnp.abs, "Neg": jnp.negative, "Exp": jnp.exp, "Log": jnp.log, "Sqrt": jnp.sqrt,
    "Floor": jnp.floor, "Ceil": jnp.ceil, "Round": jnp.round, "Sign": jnp.sign,
    "Sin": jnp.sin, "Cos": jnp.cos, "Tan": jnp.tan, "Asin": jnp.arcsin, "Acos": jnp.arccos,
    "Atan": jnp.arctan, "Sinh": jnp.sinh, "Cosh": jnp.cosh, "Asinh": jnp.arcsinh,
    "Acosh": jnp.arccosh, "Atanh": jnp.arctanh, "Erf": jax.scipy.special.erf,
    "Tanh": jnp.tanh, "Sigmoid": jax.nn.sigmoid, "Softsign": jax.nn.soft_sign,
    "Relu": lambda x: jnp.maximum(x, jnp.zeros((), _dtype(x))),
    "Reciprocal": lambda x: 1 / x,
    "Not": jnp.logical_not, "BitwiseNot": jnp.bitwise_not,
    "IsNaN": jnp.isnan,
    "Identity": lambda x: x,
    "Softplus": lambda x: jnp.logaddexp(x, jnp.zeros((), _dtype(x))),
    "Mish": lambda x: x * jnp.tanh(jnp.logaddexp(x, jnp.zeros((), _dtype(x)))),
    "HardSwish": lambda x: x * jnp.clip(x / 6 + 0.5, 0, 1),
}.items():
    _unary(_name, _fn)


def _binary(name: str, fn):
    kernel(name)(lambda cx, a, b: fn(a, b))


for _name, _fn in {
    "Add": jnp.add, "Sub": jnp.subtract, "Mul": jnp.multiply,
    "Equal": jnp.equal, "Less": jnp.less, "Greater": jnp.greater,
    "LessOrEqual": jnp.less_equal, "GreaterOrEqual": jnp.greater_equal,
    "And": jnp.logical_and, "Or": jnp.logical_or, "Xor": jnp.logical_xor,
    "BitwiseAnd": jnp.bitwise_and, "BitwiseOr": jnp.bitwise_or, "BitwiseXor": jnp.bitwise_xor,
}.items():
    _binary(_name, _fn)


@kernel("Div")
def div(cx, a, b):
    if _is_int(a):  # C-style truncation, as ONNX runtimes do
        a, b = jnp.broadcast_arrays(a, b)
        return lax.div(a, b.astype(a.dtype))
    return jnp.divide(a, b)


@kernel("Mod")
def mod(cx, a, b, fmod=0):
    return jnp.fmod(a, b) if fmod else jnp.remainder(a, b)


@kernel("Pow")
def pow_(cx, x, y):
    if _is_int(x) or _is_int(y):
        return jnp.power(x, y).astype(_dtype(x))
    return jnp.power(x, jnp.asarray(y).astype(_dtype(x)))


@kernel("BitShift")
def bit_shift(cx, x, y, direction="LEFT"):
    return jnp.left_shift(x, y) if direction == "LEFT" else jnp.right_shift(x, y)


def _variadic(name: str, fn):
    kernel(name)(lambda cx, *xs: functools.reduce(fn, xs))


_variadic("Max", jnp.maximum)
_variadic("Min", jnp.minimum)
_variadic("Sum", jnp.add)


@kernel("Mean")
def mean(cx, *xs):
    return functools.reduce(jnp.add, xs) / len(xs)


@kernel("Where")
def where(cx, c, x, y):
    return jnp.where(c, x, y)


@kernel("IsInf")
def is_inf(cx, x, detect_negative=1, detect_positive=1):
    return (jnp.isposinf(x) & bool(detect_positive)) | (jnp.isneginf(x) & bool(detect_negative))


@kernel("Clip")
def clip(cx, x, lo=None, hi=None):
    # ONNX: min is applied first, so min > max gives max everywhere
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, _dtype(x)))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, _dtype(x)))
    return x


# -- activations with attributes -------------------------------------------------
@kernel("LeakyRelu")
def leaky_relu(cx, x, alpha=0.01):
    return jnp.where(x < 0, x * alpha, x)


@kernel("PRelu")
def prelu(cx, x, slope):
    return jnp.where(x < 0, x * slope, x).astype(_dtype(x))


@kernel("Elu")
def elu(cx, x, alpha=1.0):
    return jnp.where(x < 0, alpha * jnp.expm1(x), x)


@kernel("Celu")
def celu(cx, x, alpha=1.0):
    return jnp.maximum(x, 0) + jnp.minimum(0, alpha * jnp.expm1(x / alpha))


@kernel("Selu")
def selu(cx, x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * jnp.where(x <= 0, alpha * jnp.expm1(x), x)


@kernel("ThresholdedRelu")
def thresholded_relu(cx, x, alpha=1.0):
    return jnp.where(x > alpha, x, jnp.zeros((), _dtype(x)))


@kernel("HardSigmoid")
def hard_sigmoid(cx, x, alpha=0.2, beta=0.5):
    return jnp.clip(alpha * x + beta, 0, 1).astype(_dtype(x))


@kernel("Shrink")
def shrink(cx, x, bias=0.0, lambd=0.5):
    zero = jnp.zeros((), _dtype(x))
    return jnp.where(x < -lambd, x + bias, jnp.where(x > lambd, x - bias, zero)).astype(_dtype(x))


@kernel("Gelu")
def gelu(cx, x, approximate="none"):
    y = jax.nn.gelu(cx.wide(x), approximate=approximate == "tanh")
    return y.astype(_dtype(x))


# -- softmax family ---------------------------------------------------------------
@kernel("Softmax")
def softmax(cx, x, axis=-1):
    return jax.nn.softmax(cx.wide(x), axis=axis).astype(_dtype(x))


@kernel("LogSoftmax")
def log_softmax(cx, x, axis=-1):
    return jax.nn.log_softmax(cx.wide(x), axis=axis).astype(_dtype(x))


@kernel("Hardmax")
def hardmax(cx, x, axis=-1):
    idx = jnp.argmax(x, axis=axis, keepdims=True)
    pos = lax.broadcasted_iota(idx.dtype, x.shape, axis % x.ndim)
    return (pos == idx).astype(_dtype(x))


# -- reductions ---------------------------------------------------------------------
def _lowest(dt):
    return False if dt == jnp.bool_ else (-jnp.inf if jnp.issubdtype(dt, jnp.floating)
                                          else jnp.iinfo(dt).min)


def _highest(dt):
    return True if dt == jnp.bool_ else (jnp.inf if jnp.issubdtype(dt, jnp.floating)
                                         else jnp.iinfo(dt).max)


#: what ONNX gives for a max/min over an empty set: the reduction's identity
_EMPTY_IDENTITY = {"ReduceMax": _lowest, "ReduceMin": _highest}


def _reduce(name: str, fn, wide: bool = False):
    @kernel(name, static=(1,))
    def reduce(cx, x, axes=None, keepdims=1, noop_with_empty_axes=0):
        ax = axes_list(axes, x.ndim, name)
        if not ax:
            if noop_with_empty_axes:
                return x
            ax = list(range(x.ndim))
        if name in _EMPTY_IDENTITY and any(x.shape[a] == 0 for a in ax):
            shape = [1 if a in ax else d for a, d in enumerate(x.shape)]
            y = jnp.full(shape, _EMPTY_IDENTITY[name](x.dtype), x.dtype)
            return y if keepdims else jnp.squeeze(y, tuple(ax))
        xin = cx.wide(x) if wide else x
        return fn(xin, tuple(ax), bool(keepdims)).astype(_dtype(x))

    return reduce


_reduce("ReduceSum", lambda x, a, k: jnp.sum(x, axis=a, keepdims=k), wide=True)
_reduce("ReduceMean", lambda x, a, k: jnp.mean(x, axis=a, keepdims=k), wide=True)
_reduce("ReduceMax", lambda x, a, k: jnp.max(x, axis=a, keepdims=k))
_reduce("ReduceMin", lambda x, a, k: jnp.min(x, axis=a, keepdims=k))
_reduce("ReduceProd", lambda x, a, k: jnp.prod(x, axis=a, keepdims=k), wide=True)
_reduce("ReduceL1", lambda x, a, k: jnp.sum(jnp.abs(x), axis=a, keepdims=k), wide=True)
_reduce("ReduceL2", lambda x, a, k: jnp.sqrt(jnp.sum(x * x, axis=a, keepdims=k)), wide=True)
_reduce("ReduceSumSquare", lambda x, a, k: jnp.sum(x * x, axis=a, keepdims=k), wide=True)
_reduce("ReduceLogSum", lambda x, a, k: jnp.log(jnp.sum(x, axis=a, keepdims=k)), wide=True)
_reduce("ReduceLogSumExp",
        lambda x, a, k: jax.scipy.special.logsumexp(x, axis=a, keepdims=k), wide=True)


def _arg(name: str, fn):
    @kernel(name)
    def arg(cx, x, axis=0, keepdims=1, select_last_index=0):
        axis = axis % x.ndim
        if select_last_index:
            i = fn(jnp.flip(x, axis), axis=axis, keepdims=bool(keepdims))
            i = x.shape[axis] - 1 - i
        else:
            i = fn(x, axis=axis, keepdims=bool(keepdims))
        return i.astype(jnp.int64)

    return arg


_arg("ArgMax", jnp.argmax)
_arg("ArgMin", jnp.argmin)


@kernel("CumSum", static=(1,))
def cumsum(cx, x, axis, exclusive=0, reverse=0):
    ax = int(np.asarray(static(axis, "CumSum", "axis")).reshape(())) % x.ndim
    if reverse:
        x = jnp.flip(x, ax)
    y = jnp.cumsum(x, axis=ax, dtype=_dtype(x))
    if exclusive:
        pad = [(0, 0)] * x.ndim
        pad[ax] = (1, 0)
        y = jnp.pad(lax.slice_in_dim(y, 0, x.shape[ax] - 1, axis=ax), pad)
    return jnp.flip(y, ax) if reverse else y
