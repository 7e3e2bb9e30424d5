"""Reductions, arg-reductions and the cumulative sum."""

from __future__ import annotations

import numpy as np

from hal.backends.common.context import numpy_dtype
from hal.backends.common.kernels import kernel
from hal.backends.common.table import axes_list, static_value


def _identity(op: str, dtype: np.dtype):
    """What ONNX gives for a max/min over an empty set: the reduction's identity."""
    if dtype == np.bool_:
        return op == "ReduceMin"
    if dtype.kind == "f":
        return -np.inf if op == "ReduceMax" else np.inf
    info = np.iinfo(dtype)
    return info.min if op == "ReduceMax" else info.max


def _reduce(op: str, fn, wide: bool = False) -> None:
    @kernel(op, static=(1,))
    def reduce(cx, x, axes=None, keepdims=1, noop_with_empty_axes=0):
        rank = len(x.shape)
        ax = axes_list(axes, rank, op)
        if not ax:
            if noop_with_empty_axes:
                return x
            ax = list(range(rank))
        if op in ("ReduceMax", "ReduceMin") and any(x.shape[a] == 0 for a in ax):
            dtype = numpy_dtype(x)
            shape = [1 if a in ax else d for a, d in enumerate(x.shape)] if keepdims else \
                [d for a, d in enumerate(x.shape) if a not in ax]
            return np.full(shape, _identity(op, dtype), dtype)
        y = fn(cx.xp, cx.wide(x) if wide else x, tuple(ax), bool(keepdims))
        return cx.narrow(y, x)


_reduce("ReduceSum", lambda xp, x, a, k: xp.sum(x, axis=a, keepdims=k), wide=True)
_reduce("ReduceMean", lambda xp, x, a, k: xp.mean(x, axis=a, keepdims=k), wide=True)
_reduce("ReduceMax", lambda xp, x, a, k: xp.max(x, axis=a, keepdims=k))
_reduce("ReduceMin", lambda xp, x, a, k: xp.min(x, axis=a, keepdims=k))
_reduce("ReduceProd", lambda xp, x, a, k: xp.prod(x, axis=a, keepdims=k), wide=True)
_reduce("ReduceL1", lambda xp, x, a, k: xp.sum(xp.abs(x), axis=a, keepdims=k), wide=True)
_reduce("ReduceL2", lambda xp, x, a, k: xp.sqrt(xp.sum(x * x, axis=a, keepdims=k)), wide=True)
_reduce("ReduceSumSquare", lambda xp, x, a, k: xp.sum(x * x, axis=a, keepdims=k), wide=True)
_reduce("ReduceLogSum", lambda xp, x, a, k: xp.log(xp.sum(x, axis=a, keepdims=k)), wide=True)
_reduce("ReduceLogSumExp", lambda xp, x, a, k: xp.logsumexp(x, axis=a, keepdims=k), wide=True)


def _arg(op: str, name: str) -> None:
    @kernel(op)
    def arg(cx, x, axis=0, keepdims=1, select_last_index=0):
        xp = cx.xp
        axis = axis % len(x.shape)
        if select_last_index:
            i = getattr(xp, name)(xp.flip(x, axis), axis=axis, keepdims=bool(keepdims))
            i = x.shape[axis] - 1 - i
        else:
            i = getattr(xp, name)(x, axis=axis, keepdims=bool(keepdims))
        return cx.cast(i, np.int64)


_arg("ArgMax", "argmax")
_arg("ArgMin", "argmin")


@kernel("CumSum", static=(1,))
def cumsum(cx, x, axis, exclusive=0, reverse=0):
    xp = cx.xp
    ax = int(np.asarray(static_value(axis, "CumSum", "axis")).reshape(())) % len(x.shape)
    if reverse:
        x = xp.flip(x, ax)
    y = xp.cumsum(x, axis=ax)
    if exclusive:  # shifted by one: a zero first, the last sum dropped
        first = [slice(None)] * len(x.shape)
        first[ax] = slice(0, 1)
        rest = list(first)
        rest[ax] = slice(0, x.shape[ax] - 1)
        y = xp.concatenate([xp.zeros_like(y[tuple(first)]), y[tuple(rest)]], axis=ax)
    return xp.flip(y, ax) if reverse else y
