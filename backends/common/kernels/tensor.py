"""Shape, indexing and data-movement ops.

A framework value's shape may hold None for a dynamic dim (tf traces one function for every
batch size); ``dims`` stands a framework scalar in for each, so these kernels serve both.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hal.backends.common.context import HOST_TYPES, numpy_dtype
from hal.backends.common.kernels import kernel
from hal.backends.common.table import axes_list, ints, static_value
from hal.errors import BackendError
from hal.oracle.tensor import constant as oracle_constant


def dims(cx, x) -> list:
    """The shape of ``x``, with a framework scalar for each dim unknown while tracing."""
    shape = list(x.shape)
    if all(isinstance(d, int) for d in shape):
        return shape
    runtime = cx.xp.shape(x)
    return [d if isinstance(d, int) else runtime[i] for i, d in enumerate(shape)]


def _static(shape: list) -> bool:
    return all(isinstance(d, int) for d in shape)


@kernel("Reshape", static=(1,))
def reshape(cx, x, shape, allowzero=0):
    target = ints(shape, "Reshape", "shape")
    if not allowzero:
        current = dims(cx, x)
        target = [current[i] if s == 0 else s for i, s in enumerate(target)]
    return cx.xp.reshape(x, target)


@kernel("Flatten")
def flatten(cx, x, axis=1):
    rank = len(x.shape)
    axis = axis % rank if rank else 0
    lead, inner = list(x.shape[:axis]), list(x.shape[axis:])
    if _static(inner):
        tail = int(np.prod(inner, dtype=np.int64))
        if _static(lead):
            return cx.xp.reshape(x, [int(np.prod(lead, dtype=np.int64)), tail])
        return cx.xp.reshape(x, [-1, tail])
    if _static(lead):
        return cx.xp.reshape(x, [int(np.prod(lead, dtype=np.int64)), -1])
    return cx.xp.reshape(x, [cx.xp.prod(cx.xp.shape(x)[:axis]), -1])


@kernel("Transpose")
def transpose(cx, x, perm=None):
    return cx.xp.transpose(x, perm)


@kernel("Concat")
def concat(cx, *xs, axis=0):
    return cx.xp.concatenate(cx.consts(xs), axis=axis)


@kernel("Squeeze", static=(1,))
def squeeze(cx, x, axes=None):
    ax = axes_list(axes, len(x.shape), "Squeeze")
    if ax is None:
        ax = [i for i, d in enumerate(x.shape) if d == 1]
    return cx.xp.squeeze(x, axis=tuple(ax)) if ax else x


@kernel("Unsqueeze", static=(1,))
def unsqueeze(cx, x, axes):
    rank = len(x.shape) + len(ints(axes, "Unsqueeze", "axes"))
    return cx.xp.expand_dims(x, tuple(sorted(axes_list(axes, rank, "Unsqueeze"))))


def slice_index(shape: list, starts: list, ends: list, axes: list, steps: list) -> tuple:
    """ONNX Slice's starts/ends/steps on ``shape`` as a Python index (clamped as ONNX says)."""
    index = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = shape[a]
        if not isinstance(dim, int):
            raise BackendError(f"Slice along dim {a}, whose size is known only at run time, "
                               f"is not supported; give the model a static shape there")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            index[a] = slice(min(max(s, 0), dim), min(max(e, 0), dim), st)
        else:
            s, e = min(max(s, -1), dim - 1), min(max(e, -1), dim - 1)
            index[a] = slice(s, e if e >= 0 else None, st) if s >= 0 else slice(0, 0)
    return tuple(index)


@kernel("Slice", static=(1, 2, 3, 4))
def slice_(cx, x, starts, ends, axes=None, steps=None):
    starts, ends = ints(starts, "Slice", "starts"), ints(ends, "Slice", "ends")
    axes = axes_list(axes, len(x.shape), "Slice") if axes is not None \
        else list(range(len(starts)))
    steps = ints(steps, "Slice", "steps") if steps is not None else [1] * len(starts)
    return x[slice_index(list(x.shape), starts, ends, axes, steps)]


def _positive(cx, indices, x, axis: int):
    """Negative indices counted from the end of ``x``'s ``axis``."""
    dim = dims(cx, x)[axis]
    if isinstance(indices, np.ndarray):
        if isinstance(dim, int):
            return np.where(indices < 0, indices + dim, indices)
        indices = cx.cast(indices, indices.dtype)
    if not isinstance(dim, int):
        dim = cx.cast(dim, numpy_dtype(indices))
    return cx.xp.where(indices < 0, indices + dim, indices)


@kernel("Gather")
def gather(cx, x, indices, axis=0):
    axis = axis % len(x.shape)
    return cx.xp.take(x, _positive(cx, indices, x, axis), axis=axis)


@kernel("GatherElements")
def gather_elements(cx, x, indices, axis=0):
    axis = axis % len(x.shape)
    return cx.xp.take_along_axis(x, _positive(cx, indices, x, axis), axis=axis)


@kernel("Split", static=(1,))
def split(cx, x, split=None, axis=0, num_outputs=None):
    axis = axis % len(x.shape)
    dim = x.shape[axis]
    if split is not None:
        sizes = ints(split, "Split", "split")
    else:
        chunk = -(-dim // num_outputs)
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    return tuple(cx.xp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis))


@kernel("Expand", static=(1,))
def expand(cx, x, shape):
    target = ints(shape, "Expand", "shape")
    current = dims(cx, x)
    n = max(len(current), len(target))
    current = [1] * (n - len(current)) + current
    target = [1] * (n - len(target)) + target
    return cx.xp.broadcast_to(x, [c if t == 1 else t for c, t in zip(current, target)])


@kernel("Tile", static=(1,))
def tile(cx, x, repeats):
    return cx.xp.tile(x, ints(repeats, "Tile", "repeats"))


@kernel("Pad", static=(1, 3))
def pad(cx, x, pads, constant_value=None, axes=None, mode="constant"):
    rank = len(x.shape)
    p = ints(pads, "Pad", "pads")
    ax = axes_list(axes, rank, "Pad") if axes is not None else list(range(rank))
    lo, hi = [0] * rank, [0] * rank
    for i, a in enumerate(ax):
        lo[a], hi[a] = p[i], p[i + len(ax)]
    if any(a < 0 or b < 0 for a, b in zip(lo, hi)):  # negative pads crop
        x = x[tuple(slice(max(-a, 0), b if b < 0 else None) for a, b in zip(lo, hi))]
    widths = [(max(a, 0), max(b, 0)) for a, b in zip(lo, hi)]
    if mode != "constant":
        return cx.xp.pad(x, widths, mode=mode)
    value = cx.xp.zeros((), numpy_dtype(x)) if constant_value is None else \
        cx.xp.reshape(cx.const(constant_value, x), ())
    return cx.xp.pad(x, widths, mode="constant", constant_values=value)


@kernel("Shape")
def shape(cx, x, start=0, end=None):
    d = list(x.shape)[start:end]
    if _static(d):
        return np.asarray(d, np.int64)
    return cx.cast(cx.xp.shape(x), np.int64)[start:end]


@kernel("Size")
def size(cx, x):
    if _static(list(x.shape)):
        return np.asarray(int(np.prod(x.shape, dtype=np.int64)), np.int64)
    return cx.cast(cx.xp.size(x), np.int64)


def _cast(cx, x, dtype: np.dtype):
    if isinstance(x, HOST_TYPES):  # known while tracing: stays a host value
        return np.asarray(x).astype(dtype)
    return cx.cast(x, dtype)


@kernel("Cast")
def cast(cx, x, to, saturate=1, round_mode="up"):
    return _cast(cx, x, ir.DataType(to).numpy())


@kernel("CastLike")
def cast_like(cx, x, like, saturate=1, round_mode="up"):
    return _cast(cx, x, numpy_dtype(like))


@kernel("ConstantOfShape", static=(0,))
def constant_of_shape(cx, shape, value=None):
    v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return np.full(ints(shape, "ConstantOfShape", "shape"), v[0], v.dtype)


@kernel("Range", static=(0, 1, 2))
def range_(cx, start, limit, delta):
    s, lim, d = (static_value(v, "Range", n) for v, n in ((start, "start"), (limit, "limit"),
                                                             (delta, "delta")))
    n = max(int(np.ceil((lim - s) / d)), 0)
    return s + np.arange(n, dtype=s.dtype) * d


@kernel("Trilu", static=(1,))
def trilu(cx, x, k=None, upper=1):
    k = 0 if k is None else int(np.asarray(static_value(k, "Trilu", "k")).reshape(()))
    rows = np.arange(x.shape[-2])[:, None]
    cols = np.arange(x.shape[-1])[None, :]
    keep = (cols - rows >= k) if upper else (cols - rows <= k)
    return cx.xp.where(keep, x, cx.xp.zeros_like(x))


@kernel("DepthToSpace")
def depth_to_space(cx, x, blocksize, mode="DCR"):
    _, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = cx.xp.transpose(cx.xp.reshape(x, [-1, b, b, c // (b * b), h, w]), [0, 3, 4, 1, 5, 2])
    else:
        y = cx.xp.transpose(cx.xp.reshape(x, [-1, c // (b * b), b, b, h, w]), [0, 1, 4, 2, 5, 3])
    return cx.xp.reshape(y, [-1, c // (b * b), h * b, w * b])


@kernel("SpaceToDepth")
def space_to_depth(cx, x, blocksize):
    _, c, h, w = x.shape
    b = blocksize
    y = cx.xp.transpose(cx.xp.reshape(x, [-1, c, h // b, b, w // b, b]), [0, 3, 5, 1, 2, 4])
    return cx.xp.reshape(y, [-1, c * b * b, h // b, w // b])


@kernel("Constant")
def constant(cx, sparse_value=None, value_string=None, value_strings=None, **value):
    if sparse_value is not None or value_string is not None or value_strings is not None:
        raise BackendError("Constant needs a tensor, float(s) or int(s) value; strings and "
                           "sparse tensors are not supported by the tracing backends")
    return np.asarray(oracle_constant(**value))


@kernel("Dropout", static=(1, 2))
def dropout(cx, x, ratio=None, training_mode=None, seed=None):
    """Inference: the input itself and an all-true mask. Training mode (a training graph):
    elements kept with probability ``1 - ratio`` and scaled by ``1 / (1 - ratio)``, the mask
    drawn from the trainer's random source (``cx.random``); ``seed`` is not used, the
    trainer's seed decides."""
    train = training_mode is not None and \
        bool(np.asarray(static_value(training_mode, "Dropout", "training_mode")))
    rate = 0.5 if ratio is None else float(np.asarray(static_value(ratio, "Dropout", "ratio")))
    if not train or rate == 0:
        return x, cx.xp.ones_like(x, dtype=bool)
    if cx.random is None:
        raise BackendError("Dropout in training mode is random; HAL compiles inference "
                           "graphs: export the model in eval mode, or train it with hal.train")
    if not 0 < rate < 1:
        raise BackendError(f"Dropout's ratio must be in [0, 1), got {rate}")
    draw = cx.random.uniform(dims(cx, x))
    keep = draw >= cx.const(rate, draw)
    scaled = x * cx.const(1 / (1 - rate), x)
    return cx.xp.where(keep, scaled, cx.xp.zeros_like(x)), keep
