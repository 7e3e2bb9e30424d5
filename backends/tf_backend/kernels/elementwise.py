"""Elementwise math, activations, comparisons, softmax and reductions."""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from hal.backends.tf_backend.kernels import axes_list, kernel, static


def _dt(x):
    return tf.as_dtype(x.dtype)


def _t(v, like=None):
    """A tensor of ``v``, in ``like``'s dtype when ``v`` is a numpy/python value."""
    if isinstance(v, (tf.Tensor, tf.Variable)):
        return v
    if like is not None:
        return tf.constant(np.asarray(v), dtype=_dt(like))
    return tf.constant(np.asarray(v))


def _unary(name: str, fn):
    kernel(name)(lambda cx, x: fn(_t(x)))


#: unary ops that act on each element alone: the layout pass lets NHWC tensors through them
LAYOUT_FREE = {"Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Log", "Sqrt", "Floor", "Ceil",
               "Round", "Sign", "Erf", "Softsign", "Reciprocal", "Identity", "Softplus", "Mish",
               "HardSwish", "LeakyRelu", "Elu", "Celu", "Selu", "ThresholdedRelu", "HardSigmoid",
               "Shrink", "Gelu", "Clip", "Sin", "Cos"}

for _name, _fn in {
    "Abs": tf.abs, "Neg": tf.negative, "Exp": tf.exp, "Log": tf.math.log, "Sqrt": tf.sqrt,
    "Floor": tf.floor, "Ceil": tf.math.ceil, "Round": tf.round, "Sign": tf.sign,
    "Sin": tf.sin, "Cos": tf.cos, "Tan": tf.tan, "Asin": tf.asin, "Acos": tf.acos,
    "Atan": tf.atan, "Sinh": tf.sinh, "Cosh": tf.cosh, "Asinh": tf.asinh,
    "Acosh": tf.acosh, "Atanh": tf.atanh, "Erf": tf.math.erf,
    "Tanh": tf.tanh, "Sigmoid": tf.sigmoid, "Softsign": tf.nn.softsign,
    "Relu": tf.nn.relu, "Reciprocal": tf.math.reciprocal,
    "Not": tf.logical_not, "BitwiseNot": tf.bitwise.invert,
    "IsNaN": tf.math.is_nan, "Identity": tf.identity,
    "Softplus": tf.nn.softplus,
    "Mish": lambda x: x * tf.tanh(tf.nn.softplus(x)),
    "HardSwish": lambda x: x * tf.clip_by_value(x / 6 + 0.5, 0, 1),
}.items():
    _unary(_name, _fn)


def _binary(name: str, fn):
    def k(cx, a, b):
        if not isinstance(a, tf.Tensor):
            a = _t(a, b)
        if not isinstance(b, tf.Tensor):
            b = _t(b, a)
        return fn(a, b)

    kernel(name)(k)


for _name, _fn in {
    "Add": tf.add, "Sub": tf.subtract, "Mul": tf.multiply,
    "Equal": tf.equal, "Less": tf.less, "Greater": tf.greater,
    "LessOrEqual": tf.less_equal, "GreaterOrEqual": tf.greater_equal,
    "And": tf.logical_and, "Or": tf.logical_or, "Xor": tf.math.logical_xor,
    "BitwiseAnd": tf.bitwise.bitwise_and, "BitwiseOr": tf.bitwise.bitwise_or,
    "BitwiseXor": tf.bitwise.bitwise_xor,
    # C-style truncation for integers, as ONNX runtimes do; true division for floats
    "Div": lambda a, b: tf.truncatediv(a, b) if a.dtype.is_integer else tf.divide(a, b),
}.items():
    _binary(_name, _fn)

#: binary ops the layout pass runs on two NHWC operands of the same shape
LAYOUT_FREE_BINARY = {"Add", "Sub", "Mul", "Div"}


@kernel("Mod")
def mod(cx, a, b, fmod=0):
    a = _t(a) if not isinstance(a, tf.Tensor) else a
    b = _t(b, a)
    if fmod:
        if a.dtype in (tf.float16, tf.bfloat16):  # no CPU kernel; exact in fp32
            return tf.cast(tf.truncatemod(tf.cast(a, tf.float32), tf.cast(b, tf.float32)), a.dtype)
        return tf.truncatemod(a, b)
    return tf.math.floormod(a, b)


@kernel("Pow")
def pow_(cx, x, y):
    x = _t(x) if not isinstance(x, tf.Tensor) else x
    if x.dtype.is_integer:
        return tf.cast(tf.pow(tf.cast(x, tf.float64), tf.cast(y, tf.float64)), x.dtype)
    return tf.pow(x, tf.cast(y, x.dtype))


@kernel("BitShift")
def bit_shift(cx, x, y, direction="LEFT"):
    y = _t(y, x)
    fn = tf.bitwise.left_shift if direction == "LEFT" else tf.bitwise.right_shift
    return fn(x, y)


def _variadic(name: str, fn):
    def k(cx, *xs):
        like = next(x for x in xs if isinstance(x, tf.Tensor))
        return functools.reduce(fn, [_t(x, like) for x in xs])

    kernel(name)(k)


_variadic("Max", tf.maximum)
_variadic("Min", tf.minimum)
_variadic("Sum", tf.add)


@kernel("Mean")
def mean(cx, *xs):
    like = next(x for x in xs if isinstance(x, tf.Tensor))
    return functools.reduce(tf.add, [_t(x, like) for x in xs]) / len(xs)


@kernel("Where")
def where(cx, c, x, y):
    like = x if isinstance(x, tf.Tensor) else y
    x, y = _t(x, like), _t(y, like)
    shape = tf.broadcast_dynamic_shape(tf.broadcast_dynamic_shape(tf.shape(c), tf.shape(x)),
                                       tf.shape(y))
    return tf.where(tf.broadcast_to(c, shape), tf.broadcast_to(x, shape),
                    tf.broadcast_to(y, shape))


@kernel("IsInf")
def is_inf(cx, x, detect_negative=1, detect_positive=1):
    pos = tf.logical_and(tf.math.is_inf(x), x > 0) if detect_positive else tf.zeros_like(x, tf.bool)
    neg = tf.logical_and(tf.math.is_inf(x), x < 0) if detect_negative else tf.zeros_like(x, tf.bool)
    return tf.logical_or(pos, neg)


@kernel("Clip")
def clip(cx, x, lo=None, hi=None):
    # ONNX: min is applied first, so min > max gives max everywhere
    if lo is not None:
        x = tf.maximum(x, _t(lo, x))
    if hi is not None:
        x = tf.minimum(x, _t(hi, x))
    return x


# -- activations with attributes -------------------------------------------------
@kernel("LeakyRelu")
def leaky_relu(cx, x, alpha=0.01):
    return tf.where(x < 0, x * alpha, x)


@kernel("PRelu")
def prelu(cx, x, slope):
    slope = _t(slope, x)
    return tf.where(x < 0, x * slope, tf.broadcast_to(x, tf.shape(x * slope)))


@kernel("Elu")
def elu(cx, x, alpha=1.0):
    return tf.where(x < 0, alpha * tf.math.expm1(x), x)


@kernel("Celu")
def celu(cx, x, alpha=1.0):
    return tf.maximum(x, 0) + tf.minimum(tf.zeros_like(x), alpha * tf.math.expm1(x / alpha))


@kernel("Selu")
def selu(cx, x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * tf.where(x <= 0, alpha * tf.math.expm1(x), x)


@kernel("ThresholdedRelu")
def thresholded_relu(cx, x, alpha=1.0):
    return tf.where(x > alpha, x, tf.zeros_like(x))


@kernel("HardSigmoid")
def hard_sigmoid(cx, x, alpha=0.2, beta=0.5):
    return tf.clip_by_value(alpha * x + beta, 0, 1)


@kernel("Shrink")
def shrink(cx, x, bias=0.0, lambd=0.5):
    zero = tf.zeros_like(x)
    return tf.where(x < -lambd, x + bias, tf.where(x > lambd, x - bias, zero))


@kernel("Gelu")
def gelu(cx, x, approximate="none"):
    return cx.narrow(tf.nn.gelu(cx.wide(x), approximate=approximate == "tanh"), x)


# -- softmax family ---------------------------------------------------------------
@kernel("Softmax")
def softmax(cx, x, axis=-1):
    return cx.narrow(tf.nn.softmax(cx.wide(x), axis=axis), x)


@kernel("LogSoftmax")
def log_softmax(cx, x, axis=-1):
    return cx.narrow(tf.nn.log_softmax(cx.wide(x), axis=axis), x)


@kernel("Hardmax")
def hardmax(cx, x, axis=-1):
    axis = axis % x.shape.rank
    idx = tf.argmax(x, axis=axis)
    return tf.one_hot(idx, tf.shape(x)[axis], axis=axis, dtype=x.dtype)


# -- reductions ---------------------------------------------------------------------
def _reduce(name: str, fn, wide: bool = False):
    @kernel(name, static=(1,))
    def reduce(cx, x, axes=None, keepdims=1, noop_with_empty_axes=0):
        x = _t(x)
        rank = x.shape.rank
        ax = axes_list(axes, rank, name)
        if not ax:
            if noop_with_empty_axes:
                return x
            ax = list(range(rank))
        xin = cx.wide(x) if wide else x
        return cx.narrow(fn(xin, ax, bool(keepdims)), x)

    return reduce


_reduce("ReduceSum", lambda x, a, k: tf.reduce_sum(x, a, keepdims=k), wide=True)
_reduce("ReduceMean", lambda x, a, k: tf.reduce_mean(x, a, keepdims=k), wide=True)
_reduce("ReduceMax", lambda x, a, k: tf.reduce_any(x, a, keepdims=k) if x.dtype == tf.bool
        else tf.reduce_max(x, a, keepdims=k))
_reduce("ReduceMin", lambda x, a, k: tf.reduce_all(x, a, keepdims=k) if x.dtype == tf.bool
        else tf.reduce_min(x, a, keepdims=k))
_reduce("ReduceProd", lambda x, a, k: tf.reduce_prod(x, a, keepdims=k), wide=True)
_reduce("ReduceL1", lambda x, a, k: tf.reduce_sum(tf.abs(x), a, keepdims=k), wide=True)
_reduce("ReduceL2", lambda x, a, k: tf.sqrt(tf.reduce_sum(x * x, a, keepdims=k)), wide=True)
_reduce("ReduceSumSquare", lambda x, a, k: tf.reduce_sum(x * x, a, keepdims=k), wide=True)
_reduce("ReduceLogSum", lambda x, a, k: tf.math.log(tf.reduce_sum(x, a, keepdims=k)), wide=True)
_reduce("ReduceLogSumExp", lambda x, a, k: tf.reduce_logsumexp(x, a, keepdims=k), wide=True)


def _arg(name: str, fn):
    @kernel(name)
    def arg(cx, x, axis=0, keepdims=1, select_last_index=0):
        axis = axis % x.shape.rank
        if select_last_index:
            i = fn(tf.reverse(x, [axis]), axis=axis, output_type=tf.int64)
            i = tf.cast(tf.shape(x, tf.int64)[axis] - 1, tf.int64) - i
        else:
            i = fn(x, axis=axis, output_type=tf.int64)
        return tf.expand_dims(i, axis) if keepdims else i

    return arg


_arg("ArgMax", tf.argmax)
_arg("ArgMin", tf.argmin)


@kernel("CumSum", static=(1,))
def cumsum(cx, x, axis, exclusive=0, reverse=0):
    ax = int(np.asarray(static(axis, "CumSum", "axis")).reshape(())) % x.shape.rank
    return tf.cumsum(x, axis=ax, exclusive=bool(exclusive), reverse=bool(reverse))
