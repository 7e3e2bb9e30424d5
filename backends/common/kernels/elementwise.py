"""Elementwise math, logic, comparisons and activations."""

from __future__ import annotations

import functools

import numpy as np

from hal.backends.common.context import numpy_dtype
from hal.backends.common.kernels import kernel

#: ONNX ops that are one function of ``xp`` applied to one tensor, by that function's name
UNARY = {
    "Abs": "abs", "Neg": "negative", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Sin": "sin",
    "Cos": "cos", "Tan": "tan", "Asin": "arcsin", "Acos": "arccos", "Atan": "arctan",
    "Sinh": "sinh", "Cosh": "cosh", "Asinh": "arcsinh", "Acosh": "arccosh", "Atanh": "arctanh",
    "Tanh": "tanh", "Erf": "erf", "Sigmoid": "sigmoid", "Softsign": "soft_sign",
    "Softplus": "softplus", "Relu": "relu", "Reciprocal": "reciprocal", "Not": "logical_not",
    "BitwiseNot": "bitwise_not", "IsNaN": "isnan",
}
#: ONNX ops that are one function of ``xp`` of two same-typed, broadcast tensors
BINARY = {
    "Add": "add", "Sub": "subtract", "Mul": "multiply", "Equal": "equal", "Less": "less",
    "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
    "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
    "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
}


def _unary(op: str, name: str) -> None:
    kernel(op)(lambda cx, x: getattr(cx.xp, name)(x))


def _binary(op: str, name: str) -> None:
    kernel(op)(lambda cx, a, b: getattr(cx.xp, name)(*cx.consts((a, b))))


for _op, _name in UNARY.items():
    _unary(_op, _name)
for _op, _name in BINARY.items():
    _binary(_op, _name)


def is_integer(x) -> bool:
    return numpy_dtype(x).kind in "iu"


@kernel("Identity")
def identity(cx, x):
    return x


@kernel("Div")
def div(cx, a, b):
    a, b = cx.consts((a, b))
    if is_integer(a):  # C-style truncation, as ONNX runtimes do
        return cx.xp.trunc_divide(a, b)
    return cx.xp.divide(a, b)


@kernel("Mod")
def mod(cx, a, b, fmod=0):
    a, b = cx.consts((a, b))
    return cx.xp.fmod(a, b) if fmod else cx.xp.remainder(a, b)


@kernel("Pow")
def pow_(cx, x, y):
    if is_integer(x) or is_integer(y):
        return cx.cast(cx.xp.power(x, y), numpy_dtype(x))
    return cx.xp.power(x, cx.cast(y, numpy_dtype(x)))


@kernel("BitShift")
def bit_shift(cx, x, y, direction="LEFT"):
    x, y = cx.consts((x, y))
    return cx.xp.left_shift(x, y) if direction == "LEFT" else cx.xp.right_shift(x, y)


def _variadic(op: str, name: str) -> None:
    kernel(op)(lambda cx, *xs: functools.reduce(getattr(cx.xp, name), cx.consts(xs)))


_variadic("Max", "maximum")
_variadic("Min", "minimum")
_variadic("Sum", "add")


@kernel("Mean")
def mean(cx, *xs):
    return functools.reduce(cx.xp.add, cx.consts(xs)) / len(xs)


@kernel("Where")
def where(cx, c, x, y):
    return cx.xp.where(c, *cx.consts((x, y)))


@kernel("IsInf")
def is_inf(cx, x, detect_negative=1, detect_positive=1):
    xp = cx.xp
    inf = xp.isinf(x)
    pos = xp.logical_and(inf, x > 0) if detect_positive else xp.zeros_like(inf)
    neg = xp.logical_and(inf, x < 0) if detect_negative else xp.zeros_like(inf)
    return xp.logical_or(pos, neg)


@kernel("Clip")
def clip(cx, x, lo=None, hi=None):
    # ONNX: min is applied first, so min > max gives max everywhere
    if lo is not None:
        x = cx.xp.maximum(x, cx.const(lo, x))
    if hi is not None:
        x = cx.xp.minimum(x, cx.const(hi, x))
    return x


# -- activations with attributes -------------------------------------------------
@kernel("LeakyRelu")
def leaky_relu(cx, x, alpha=0.01):
    return cx.xp.where(x < 0, x * alpha, x)


@kernel("PRelu")
def prelu(cx, x, slope):
    return cx.xp.where(x < 0, x * cx.const(slope, x), x)


@kernel("Elu")
def elu(cx, x, alpha=1.0):
    return cx.xp.where(x < 0, alpha * cx.xp.expm1(x), x)


@kernel("Celu")
def celu(cx, x, alpha=1.0):
    zero = cx.xp.zeros_like(x)
    return cx.xp.maximum(x, zero) + cx.xp.minimum(zero, alpha * cx.xp.expm1(x / alpha))


@kernel("Selu")
def selu(cx, x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * cx.xp.where(x <= 0, alpha * cx.xp.expm1(x), x)


@kernel("ThresholdedRelu")
def thresholded_relu(cx, x, alpha=1.0):
    return cx.xp.where(x > alpha, x, cx.xp.zeros_like(x))


@kernel("HardSigmoid")
def hard_sigmoid(cx, x, alpha=0.2, beta=0.5):
    return cx.narrow(cx.xp.clip(alpha * x + beta, 0, 1), x)


@kernel("HardSwish")
def hard_swish(cx, x):
    return x * cx.xp.clip(x / 6 + 0.5, 0, 1)


@kernel("Mish")
def mish(cx, x):
    return x * cx.xp.tanh(cx.xp.softplus(x))


@kernel("Shrink")
def shrink(cx, x, bias=0.0, lambd=0.5):
    xp = cx.xp
    return cx.narrow(xp.where(x < -lambd, x + bias,
                              xp.where(x > lambd, x - bias, xp.zeros_like(x))), x)


@kernel("Gelu")
def gelu(cx, x, approximate="none"):
    return cx.narrow(cx.xp.gelu(cx.wide(x), approximate=approximate == "tanh"), x)


# -- softmax family ---------------------------------------------------------------
#: the least exponent a softmax term is given: exp(-87) is still a normal float32
EXP_FLOOR = -87.0


def _below_max(cx, x, axis: int):
    """``x - max(x)`` along ``axis``, and its exponentials, kept within [exp(-87), 1].

    In exact arithmetic the shift is at most 0 and 0 at the max, so no term overflows and
    the largest is 1. XLA on CPU breaks that at large magnitudes: it recomputes a cheap
    producer of ``x`` (a mean's scaling) in each fusion that reads it, rounded in one and
    contracted into the shift (a fused multiply-add) in another, which compiles vary, so the
    max missed its own element by up to half an ulp of it (512 at 1e10) and every term
    overflowed or underflowed: softmax gave NaN on ONNX's light_squeezenet (GlobalAveragePool
    into Softmax) on jax and tf. Terms below the floor weigh under 1e-37 next to the max's.
    """
    z = x - cx.xp.max(x, axis=axis, keepdims=True)
    return z, cx.xp.exp(cx.xp.clip(z, EXP_FLOOR, 0))


@kernel("Softmax")
def softmax(cx, x, axis=-1):
    _, e = _below_max(cx, cx.wide(x), axis)
    return cx.narrow(e / cx.xp.sum(e, axis=axis, keepdims=True), x)


@kernel("LogSoftmax")
def log_softmax(cx, x, axis=-1):
    z, e = _below_max(cx, cx.wide(x), axis)
    return cx.narrow(z - cx.xp.log(cx.xp.sum(e, axis=axis, keepdims=True)), x)


@kernel("Hardmax")
def hardmax(cx, x, axis=-1):
    axis = axis % len(x.shape)
    first = cx.xp.argmax(x, axis=axis, keepdims=True)
    shape = [1] * len(x.shape)
    shape[axis] = x.shape[axis]
    position = cx.const(np.arange(x.shape[axis]).reshape(shape), first)
    return cx.cast(position == first, numpy_dtype(x))
