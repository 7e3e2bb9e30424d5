"""Elementwise math, activations, reductions and matrix products."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from hal.backends.torch_backend.lowering import NodeView, converter

_UNARY = {
    "Abs": torch.abs, "Neg": torch.neg, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil,
    "Round": torch.round, "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan,
    "Asin": torch.asin, "Acos": torch.acos, "Atan": torch.atan, "Sinh": torch.sinh,
    "Cosh": torch.cosh, "Asinh": torch.asinh, "Acosh": torch.acosh, "Atanh": torch.atanh,
    "Erf": torch.erf, "Sign": torch.sign, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh,
    "Relu": torch.relu, "Not": torch.logical_not, "IsNaN": torch.isnan,
    "Softsign": F.softsign, "Mish": F.mish,
}
_BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul,
    "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt, "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor, "BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or,
    "BitwiseXor": torch.bitwise_xor, "Where": torch.where,
}


@converter(*_UNARY)
def unary(n: NodeView):
    return n.call(_UNARY[n.op], n.input(0))


@converter(*_BINARY)
def binary(n: NodeView):
    return n.call(_BINARY[n.op], *n.inputs())


@converter("BitwiseNot")
def bitwise_not(n: NodeView):
    return n.call(torch.bitwise_not, n.input(0))


@converter("Identity")
def identity(n: NodeView):
    return n.input(0)


def _div(a, b):
    if a.is_floating_point():
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")


@converter("Div")
def div(n: NodeView):
    dt = n.in_dtype(0)
    if dt is not None and dt.is_floating_point:
        return n.call(torch.div, n.input(0), n.input(1))
    return n.call(_div, n.input(0), n.input(1))


def _pow(a, b):
    return torch.pow(a, b).to(a.dtype)


@converter("Pow")
def pow_(n: NodeView):
    return n.call(_pow, n.input(0), n.input(1))


@converter("Mod")
def mod(n: NodeView):
    fn = torch.fmod if n.attr("fmod", 0) else torch.remainder
    return n.call(fn, n.input(0), n.input(1))


def _max(*xs):
    return functools.reduce(torch.maximum, xs)


def _min(*xs):
    return functools.reduce(torch.minimum, xs)


def _sum(*xs):
    return functools.reduce(torch.add, xs)


def _mean(*xs):
    return functools.reduce(torch.add, xs) / len(xs)


_VARIADIC = {"Max": _max, "Min": _min, "Sum": _sum, "Mean": _mean}


@converter(*_VARIADIC)
def variadic(n: NodeView):
    xs = n.inputs()
    if len(xs) == 1:
        return n.call(torch.clone, xs[0])
    if len(xs) == 2 and n.op != "Mean":
        return n.call({"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add}[n.op], *xs)
    return n.call(_VARIADIC[n.op], *xs)


def _clip(x, lo, hi):
    if lo is None and hi is None:
        return x.clone()
    return torch.clamp(x, lo, hi)


@converter("Clip")
def clip(n: NodeView):
    lo, hi = n.scalar(1), n.scalar(2)
    if all(v is None or isinstance(v, (int, float)) for v in (lo, hi)):
        return n.call(_clip, n.input(0), lo, hi)
    return n.call(_clip, n.input(0), n.input(1), n.input(2))


def _elu(x, alpha):
    return torch.where(x > 0, x, alpha * torch.expm1(x))


def _selu(x, alpha, gamma):
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


def _hard_sigmoid(x, alpha, beta):
    return torch.clamp(alpha * x + beta, 0, 1)


def _hard_swish(x):
    return x * torch.clamp(x / 6 + 0.5, 0, 1)


def _thresholded_relu(x, alpha):
    return torch.where(x > alpha, x, torch.zeros_like(x))


def _prelu(x, slope):
    return torch.where(x < 0, x * slope, x)


def _celu(x, alpha):
    return torch.clamp(x, min=0) + torch.clamp(alpha * torch.expm1(x / alpha), max=0)


def _softplus(x):
    return torch.log1p(torch.exp(-torch.abs(x))) + torch.clamp(x, min=0)


@converter("Elu", "Selu", "LeakyRelu", "HardSigmoid", "HardSwish", "ThresholdedRelu", "PRelu",
           "Celu", "Softplus")
def activation(n: NodeView):
    x = n.input(0)
    if n.op == "Elu":
        return n.call(_elu, x, float(n.attr("alpha", 1.0)))
    if n.op == "Selu":
        return n.call(_selu, x, float(n.attr("alpha", 1.67326319217681884765625)),
                      float(n.attr("gamma", 1.05070102214813232421875)))
    if n.op == "LeakyRelu":
        return n.call(F.leaky_relu, x, float(n.attr("alpha", 0.01)))
    if n.op == "HardSigmoid":
        return n.call(_hard_sigmoid, x, float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5)))
    if n.op == "HardSwish":
        return n.call(_hard_swish, x)
    if n.op == "ThresholdedRelu":
        return n.call(_thresholded_relu, x, float(n.attr("alpha", 1.0)))
    if n.op == "Celu":
        return n.call(_celu, x, float(n.attr("alpha", 1.0)))
    if n.op == "Softplus":
        return n.call(_softplus, x)
    return n.call(_prelu, x, n.input(1))


@converter("Gelu")
def gelu(n: NodeView):
    return n.call(F.gelu, n.input(0), approximate=n.attr("approximate", "none"))


def _is_inf(x, neg, pos):
    if neg and pos:
        return torch.isinf(x)
    if neg:
        return torch.isneginf(x)
    if pos:
        return torch.isposinf(x)
    return torch.zeros_like(x, dtype=torch.bool)


@converter("IsInf")
def is_inf(n: NodeView):
    return n.call(_is_inf, n.input(0), n.attr("detect_negative", 1), n.attr("detect_positive", 1))


@converter("Softmax", "LogSoftmax")
def softmax(n: NodeView):
    fn = F.softmax if n.op == "Softmax" else F.log_softmax
    return n.call(fn, n.input(0), int(n.attr("axis", -1)))


def _hardmax(x, axis):
    idx = torch.argmax(x, dim=axis, keepdim=True)
    return torch.zeros_like(x).scatter_(axis, idx, 1)


@converter("Hardmax")
def hardmax(n: NodeView):
    return n.call(_hardmax, n.input(0), int(n.attr("axis", -1)))


@converter("MatMul")
def matmul(n: NodeView):
    return n.call(torch.matmul, n.input(0), n.input(1))


def _gemm(a, b, c, alpha, beta, trans_a, trans_b):
    if trans_a:
        a = a.t()
    if trans_b:
        b = b.t()
    y = a @ b
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y


@converter("Gemm")
def gemm(n: NodeView):
    a, b, c = n.input(0), n.input(1), n.input(2)
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    ta, tb = int(n.attr("transA", 0)), int(n.attr("transB", 0))
    c_shape = n.static_shape(2)
    if alpha == 1.0 and beta == 1.0 and not ta and tb and (c is None or (
            c_shape is not None and len(c_shape) == 1)):
        return n.call(F.linear, a, b, c)  # the fused addmm path
    return n.call(_gemm, a, b, c, alpha, beta, ta, tb)


# -- reductions ------------------------------------------------------------------------------

def _axes(x, axes, noop):
    """ONNX reduce axes -> a tuple of dims (None means leave x as it is)."""
    if axes is None or (not isinstance(axes, (list, tuple)) and axes.numel() == 0) or (
            isinstance(axes, (list, tuple)) and len(axes) == 0):
        return None if noop else tuple(range(x.ndim))
    if not isinstance(axes, (list, tuple)):
        axes = axes.tolist()
    return tuple(int(a) % max(x.ndim, 1) for a in axes)


def _reduce(kind, x, axes, keepdims, noop):
    dims = _axes(x, axes, noop)
    if dims is None:
        return x.clone()
    if x.ndim == 0:
        dims = ()
    empty = any(x.shape[d] == 0 for d in dims)
    if kind == "ReduceMean":
        return torch.mean(x, dim=dims, keepdim=keepdims) if dims else x.clone()
    if kind in ("ReduceSum", "ReduceL1", "ReduceSumSquare", "ReduceL2", "ReduceLogSum"):
        y = {"ReduceSum": x, "ReduceL1": torch.abs(x), "ReduceSumSquare": x * x,
             "ReduceL2": x * x, "ReduceLogSum": x}[kind]
        y = torch.sum(y, dim=dims, keepdim=keepdims) if dims else y.clone()
        if kind == "ReduceL2":
            y = torch.sqrt(y)
        elif kind == "ReduceLogSum":
            y = torch.log(y)
        return y.to(x.dtype)
    if kind == "ReduceLogSumExp":
        if empty:
            return _empty_fill(x, dims, keepdims, -math.inf)
        if not dims:
            return x.clone()
        return torch.logsumexp(x.double() if not x.is_floating_point() else x, dim=dims,
                               keepdim=keepdims).to(x.dtype)
    if kind == "ReduceProd":
        y = x
        for d in sorted(dims, reverse=True):
            y = torch.prod(y, dim=d, keepdim=keepdims)
        return y if dims else x.clone()
    if empty:
        if x.is_floating_point():
            fill = -math.inf if kind == "ReduceMax" else math.inf
        elif x.dtype == torch.bool:
            fill = kind != "ReduceMax"
        else:
            info = torch.iinfo(x.dtype)
            fill = info.min if kind == "ReduceMax" else info.max
        return _empty_fill(x, dims, keepdims, fill)
    if not dims:
        return x.clone()
    return (torch.amax if kind == "ReduceMax" else torch.amin)(x, dim=dims, keepdim=keepdims)


def _empty_fill(x, dims, keepdims, fill):
    shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keepdims or i not in dims]
    return torch.full(shape, fill, dtype=x.dtype, device=x.device)


_REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
           "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp")


@converter(*_REDUCE)
def reduce(n: NodeView):
    axes = n.ints(1) if n.has(1) else n.attr("axes")
    keep = bool(n.attr("keepdims", 1))
    noop = bool(n.attr("noop_with_empty_axes", 0))
    if n.op == "ReduceMean" and isinstance(axes, list) and axes and n.in_dtype(0) in (
            torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return n.call(torch.mean, n.input(0), dim=tuple(axes), keepdim=keep)
    return n.call(_reduce, n.op, n.input(0), axes, keep, noop)


def _arg(kind, x, axis, keepdims, last):
    fn = torch.argmax if kind == "ArgMax" else torch.argmin
    if not last:
        return fn(x, dim=axis, keepdim=keepdims)
    idx = fn(torch.flip(x, (axis,)), dim=axis, keepdim=keepdims)
    return x.shape[axis] - 1 - idx


@converter("ArgMax", "ArgMin")
def arg(n: NodeView):
    return n.call(_arg, n.op, n.input(0), int(n.attr("axis", 0)), bool(n.attr("keepdims", 1)),
                  bool(n.attr("select_last_index", 0)))


def _cumsum(x, axis, exclusive, reverse):
    axis = int(axis if isinstance(axis, int) else axis.reshape(-1)[0].item())
    if reverse:
        x = torch.flip(x, (axis,))
    y = torch.cumsum(x, dim=axis).to(x.dtype)
    if exclusive:
        y = torch.cat([torch.zeros_like(x.narrow(axis, 0, 1)),
                       y.narrow(axis, 0, x.shape[axis] - 1)], dim=axis)
    return torch.flip(y, (axis,)) if reverse else y


@converter("CumSum")
def cumsum(n: NodeView):
    axis = n.scalar(1)
    return n.call(_cumsum, n.input(0), axis, n.attr("exclusive", 0), n.attr("reverse", 0))


@converter("Einsum")
def einsum(n: NodeView):
    return n.call(torch.einsum, n.attr("equation"), *n.inputs())
