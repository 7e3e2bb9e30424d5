"""Shape, indexing and data-movement ops."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import onnx_ir as ir
from jax import lax

from hal.backends.jax_backend.kernels import axes_list, kernel, static


def _ints(v, op: str, what: str) -> list[int]:
    return [int(i) for i in np.asarray(static(v, op, what)).reshape(-1)]


@kernel("Reshape", static=(1,))
def reshape(cx, x, shape, allowzero=0):
    shape = _ints(shape, "Reshape", "shape")
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return jnp.reshape(x, shape)


@kernel("Flatten")
def flatten(cx, x, axis=1):
    axis = axis % x.ndim if x.ndim else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return jnp.reshape(x, (lead, int(np.prod(x.shape[axis:], dtype=np.int64))))


@kernel("Transpose")
def transpose(cx, x, perm=None):
    return jnp.transpose(x, perm)


@kernel("Concat")
def concat(cx, *xs, axis=0):
    return jnp.concatenate(xs, axis=axis)


@kernel("Squeeze", static=(1,))
def squeeze(cx, x, axes=None):
    ax = axes_list(axes, x.ndim, "Squeeze")
    if ax is None:
        ax = [i for i, d in enumerate(x.shape) if d == 1]
    return jnp.squeeze(x, tuple(ax))


@kernel("Unsqueeze", static=(1,))
def unsqueeze(cx, x, axes):
    rank = x.ndim + len(_ints(axes, "Unsqueeze", "axes"))
    return jnp.expand_dims(x, tuple(sorted(axes_list(axes, rank, "Unsqueeze"))))


@kernel("Slice", static=(1, 2, 3, 4))
def slice_(cx, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts, "Slice", "starts"), _ints(ends, "Slice", "ends")
    axes = axes_list(axes, x.ndim, "Slice") if axes is not None else list(range(len(starts)))
    steps = _ints(steps, "Slice", "steps") if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = x.shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            index[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            index[a] = slice(s, e if e >= 0 else None, st)
    return x[tuple(index)]


def _normalize(indices, dim):
    if isinstance(indices, np.ndarray):
        return np.where(indices < 0, indices + dim, indices)
    return jnp.where(indices < 0, indices + dim, indices)


@kernel("Gather")
def gather(cx, x, indices, axis=0):
    axis = axis % x.ndim
    return jnp.take(x, _normalize(indices, x.shape[axis]), axis=axis, mode="clip")


@kernel("GatherElements")
def gather_elements(cx, x, indices, axis=0):
    axis = axis % x.ndim
    return jnp.take_along_axis(x, _normalize(indices, x.shape[axis]), axis=axis, mode="clip")


@kernel("Split", static=(1,))
def split(cx, x, split=None, axis=0, num_outputs=None):
    axis = axis % x.ndim
    dim = x.shape[axis]
    if split is not None:
        sizes = _ints(split, "Split", "split")
    else:
        n = num_outputs
        chunk = -(-dim // n)
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    points = np.cumsum(sizes)[:-1].tolist()
    return tuple(jnp.split(x, points, axis=axis))


@kernel("Expand", static=(1,))
def expand(cx, x, shape):
    shape = np.broadcast_shapes(tuple(x.shape), tuple(_ints(shape, "Expand", "shape")))
    return jnp.broadcast_to(x, shape)


@kernel("Tile", static=(1,))
def tile(cx, x, repeats):
    return jnp.tile(x, _ints(repeats, "Tile", "repeats"))


@kernel("Pad", static=(1, 3))
def pad(cx, x, pads, constant_value=None, axes=None, mode="constant"):
    p = _ints(pads, "Pad", "pads")
    ax = axes_list(axes, x.ndim, "Pad") if axes is not None else list(range(x.ndim))
    lo, hi = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(ax):
        lo[a], hi[a] = p[i], p[i + len(ax)]
    if mode == "constant":
        value = jnp.zeros((), x.dtype) if constant_value is None else \
            jnp.asarray(constant_value, x.dtype).reshape(())
        return lax.pad(x, value, [(a, b, 0) for a, b in zip(lo, hi)])  # negative pads crop
    # reflect / edge / wrap: crop negative pads first, then pad the rest
    x = x[tuple(slice(max(-a, 0), x.shape[i] - max(-b, 0)) for i, (a, b) in enumerate(zip(lo, hi)))]
    return jnp.pad(x, [(max(a, 0), max(b, 0)) for a, b in zip(lo, hi)], mode=mode)


@kernel("Shape")
def shape(cx, x, start=0, end=None):
    return np.asarray(x.shape[start:end], np.int64)


@kernel("Size")
def size(cx, x):
    return np.asarray(int(np.prod(x.shape, dtype=np.int64)), np.int64)


@kernel("Cast")
def cast(cx, x, to, saturate=1, round_mode="up"):
    return jnp.asarray(x).astype(ir.DataType(to).numpy())


@kernel("CastLike")
def cast_like(cx, x, like, saturate=1, round_mode="up"):
    return jnp.asarray(x).astype(like.dtype)


@kernel("ConstantOfShape", static=(0,))
def constant_of_shape(cx, shape, value=None):
    v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return jnp.full(_ints(shape, "ConstantOfShape", "shape"), v[0], v.dtype)


@kernel("Range", static=(0, 1, 2))
def range_(cx, start, limit, delta):
    s, lim, d = (static(v, "Range", n) for v, n in ((start, "start"), (limit, "limit"),
                                                       (delta, "delta")))
    n = max(int(np.ceil((lim - s) / d)), 0)
    return jnp.asarray(s + np.arange(n, dtype=s.dtype) * d)


@kernel("Trilu", static=(1,))
def trilu(cx, x, k=None, upper=1):
    k = 0 if k is None else int(np.asarray(static(k, "Trilu", "k")).reshape(()))
    return jnp.triu(x, k) if upper else jnp.tril(x, k)


@kernel("DepthToSpace")
def depth_to_space(cx, x, blocksize, mode="DCR"):
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


@kernel("SpaceToDepth")
def space_to_depth(cx, x, blocksize):
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@kernel("Constant")
def constant(cx, value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None, sparse_value=None, value_string=None, value_strings=None):
    if value is not None:
        return np.asarray(value)
    if value_float is not None:
        return np.asarray(value_float, np.float32)
    if value_floats is not None:
        return np.asarray(value_floats, np.float32)
    if value_int is not None:
        return np.asarray(value_int, np.int64)
    if value_ints is not None:
        return np.asarray(value_ints, np.int64)
    raise ValueError("Constant needs a tensor, float(s) or int(s) value; strings and sparse "
                     "tensors are not supported by jax")


@kernel("Dropout", static=(1, 2))
def dropout(cx, x, ratio=None, training_mode=None, seed=None):
    if training_mode is not None and bool(np.asarray(static(training_mode, "Dropout",
                                                            "training_mode"))):
        raise ValueError("Dropout in training mode is random; HAL compiles inference graphs")
    return x, jnp.ones(x.shape, bool)
