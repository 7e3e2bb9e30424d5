"""Shape, indexing and data-movement ops."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import tensorflow as tf
from hal.backends.tf_backend.kernels import axes_list, dims, ints, kernel, static


def _t(x):
    return x if isinstance(x, (tf.Tensor, tf.Variable)) else tf.constant(np.asarray(x))


@kernel("Reshape", static=(1,))
def reshape(cx, x, shape, allowzero=0):
    x = _t(x)
    if not isinstance(shape, np.ndarray):  # computed from a dynamic shape: a tensor
        if allowzero:
            return tf.reshape(x, shape)
        cur = tf.shape(x, tf.int64)
        n = tf.shape(shape)[0]
        pad = tf.concat([cur, tf.zeros([tf.maximum(n - tf.size(cur), 0)], tf.int64)], 0)[:n]
        return tf.reshape(x, tf.where(tf.equal(shape, 0), pad, tf.cast(shape, tf.int64)))
    shape = [int(s) for s in shape.reshape(-1)]
    cur = dims(x)
    if not allowzero:
        shape = [cur[i] if s == 0 else s for i, s in enumerate(shape)]
    if all(isinstance(s, int) for s in shape):
        return tf.reshape(x, shape)
    return tf.reshape(x, tf.stack([tf.cast(s, tf.int32) for s in shape]))


@kernel("Flatten")
def flatten(cx, x, axis=1):
    x = _t(x)
    rank = x.shape.rank
    axis = axis % rank if rank else 0
    d = dims(x)
    inner = d[axis:]
    if all(isinstance(v, int) for v in inner):
        tail = int(np.prod(inner, dtype=np.int64))
        if axis == 0:
            return tf.reshape(x, [1, tail])
        return tf.reshape(x, [-1, tail])
    lead = d[:axis]
    if all(isinstance(v, int) for v in lead):
        return tf.reshape(x, [int(np.prod(lead, dtype=np.int64)), -1])
    return tf.reshape(x, [tf.reduce_prod(tf.shape(x)[:axis]), -1])


@kernel("Transpose")
def transpose(cx, x, perm=None):
    return tf.transpose(_t(x), perm)


@kernel("Concat")
def concat(cx, *xs, axis=0):
    like = next((x for x in xs if isinstance(x, tf.Tensor)), None)
    xs = [x if isinstance(x, tf.Tensor) else tf.constant(np.asarray(x), like.dtype) for x in xs]
    return tf.concat(xs, axis=axis)


@kernel("Squeeze", static=(1,))
def squeeze(cx, x, axes=None):
    x = _t(x)
    ax = axes_list(axes, x.shape.rank, "Squeeze")
    if ax is None:
        ax = [i for i, d in enumerate(x.shape.as_list()) if d == 1]
    return tf.squeeze(x, ax) if ax else x


@kernel("Unsqueeze", static=(1,))
def unsqueeze(cx, x, axes):
    x = _t(x)
    rank = x.shape.rank + len(ints(axes, "Unsqueeze", "axes"))
    for a in sorted(axes_list(axes, rank, "Unsqueeze")):
        x = tf.expand_dims(x, a)
    return x


@kernel("Slice", static=(1, 2, 3, 4))
def slice_(cx, x, starts, ends, axes=None, steps=None):
    x = _t(x)
    starts, ends = ints(starts, "Slice", "starts"), ints(ends, "Slice", "ends")
    axes = axes_list(axes, x.shape.rank, "Slice") if axes is not None \
        else list(range(len(starts)))
    steps = ints(steps, "Slice", "steps") if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.shape.rank
    shape = x.shape.as_list()
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = shape[a]
        if dim is None:
            raise ValueError("Slice on a dynamic dim is not supported")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            index[a] = slice(s, e, st)
        else:
            s, e = min(max(s, -1), dim - 1), min(max(e, -1), dim - 1)
            index[a] = slice(s, e if e >= 0 else None, st) if s >= 0 else slice(0, 0)
    return x[tuple(index)]


def _normalize(indices, dim):
    if isinstance(indices, np.ndarray):
        return np.where(indices < 0, indices + dim, indices)
    return tf.where(indices < 0, indices + tf.cast(dim, indices.dtype), indices)


@kernel("Gather")
def gather(cx, x, indices, axis=0):
    x = _t(x)
    axis = axis % x.shape.rank
    return tf.gather(x, _normalize(indices, dims(x)[axis]), axis=axis)


@kernel("GatherElements")
def gather_elements(cx, x, indices, axis=0):
    x = _t(x)
    rank = x.shape.rank
    axis = axis % rank
    idx = _t(_normalize(indices, dims(x)[axis]))
    idx = tf.cast(idx, tf.int64)
    # full coordinates: the index along ``axis``, the position itself along the others
    grids = tf.meshgrid(*[tf.range(d, dtype=tf.int64) for d in tf.unstack(tf.shape(idx,
                                                                                   tf.int64))],
                        indexing="ij")
    grids[axis] = idx
    return tf.gather_nd(x, tf.stack(grids, axis=-1))


@kernel("Split", static=(1,))
def split(cx, x, split=None, axis=0, num_outputs=None):
    x = _t(x)
    axis = axis % x.shape.rank
    dim = x.shape[axis]
    if split is not None:
        sizes = ints(split, "Split", "split")
    else:
        n = num_outputs
        chunk = -(-dim // n)
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
    return tuple(tf.split(x, sizes, axis=axis))


@kernel("Expand", static=(1,))
def expand(cx, x, shape):
    x = _t(x)
    target = ints(shape, "Expand", "shape")
    out = tf.broadcast_dynamic_shape(tf.shape(x), tf.constant(target, tf.int32))
    return tf.broadcast_to(x, out)


@kernel("Tile", static=(1,))
def tile(cx, x, repeats):
    return tf.tile(_t(x), ints(repeats, "Tile", "repeats"))


@kernel("Pad", static=(1, 3))
def pad(cx, x, pads, constant_value=None, axes=None, mode="constant"):
    x = _t(x)
    rank = x.shape.rank
    p = ints(pads, "Pad", "pads")
    ax = axes_list(axes, rank, "Pad") if axes is not None else list(range(rank))
    lo, hi = [0] * rank, [0] * rank
    for i, a in enumerate(ax):
        lo[a], hi[a] = p[i], p[i + len(ax)]
    # negative pads crop first
    shape = dims(x)
    crop = tuple(slice(max(-a, 0), None if b >= 0 else shape[i] + b)
                 for i, (a, b) in enumerate(zip(lo, hi)))
    if any(a < 0 or b < 0 for a, b in zip(lo, hi)):
        x = x[crop]
    paddings = [[max(a, 0), max(b, 0)] for a, b in zip(lo, hi)]
    if mode == "constant":
        value = 0 if constant_value is None else constant_value
        if not isinstance(value, tf.Tensor):
            value = np.asarray(value).reshape(()).astype(x.dtype.as_numpy_dtype)
        return tf.pad(x, paddings, constant_values=tf.reshape(tf.cast(value, x.dtype), []))
    if mode == "reflect":
        return tf.pad(x, paddings, mode="REFLECT")
    if mode == "edge":
        for a, (lo, h) in enumerate(paddings):
            if lo or h:
                first = tf.gather(x, [0] * lo, axis=a)
                last = tf.gather(x, [x.shape[a] - 1] * h, axis=a)
                x = tf.concat([first, x, last], axis=a)
        return x
    if mode == "wrap":
        for a, (lo, h) in enumerate(paddings):
            if lo or h:
                n = x.shape[a]
                idx = [(i % n) for i in range(-lo, n + h)]
                x = tf.gather(x, idx, axis=a)
        return x
    raise ValueError(f"Pad mode {mode!r} is not supported")


@kernel("Shape")
def shape(cx, x, start=0, end=None):
    x = _t(x)
    d = x.shape.as_list()
    rank = len(d)
    s = max(start + rank, 0) if start < 0 else min(start, rank)
    e = rank if end is None else (max(end + rank, 0) if end < 0 else min(end, rank))
    if all(v is not None for v in d[s:e]):
        return np.asarray(d[s:e], np.int64)
    return tf.shape(x, tf.int64)[s:e]


@kernel("Size")
def size(cx, x):
    x = _t(x)
    if x.shape.is_fully_defined():
        return np.asarray(x.shape.num_elements(), np.int64)
    return tf.size(x, tf.int64)


@kernel("Cast")
def cast(cx, x, to, saturate=1, round_mode="up"):
    return tf.cast(_t(x), tf.as_dtype(ir.DataType(to).numpy()))


@kernel("CastLike")
def cast_like(cx, x, like, saturate=1, round_mode="up"):
    return tf.cast(_t(x), tf.as_dtype(like.dtype))


@kernel("ConstantOfShape", static=(0,))
def constant_of_shape(cx, shape, value=None):
    v = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return tf.fill(ints(shape, "ConstantOfShape", "shape"), tf.constant(v[0], v.dtype))


@kernel("Range", static=(0, 1, 2))
def range_(cx, start, limit, delta):
    s, lim, d = (static(v, "Range", n) for v, n in ((start, "start"), (limit, "limit"),
                                                       (delta, "delta")))
    n = max(int(np.ceil((lim - s) / d)), 0)
    return tf.constant(s + np.arange(n, dtype=s.dtype) * d)


@kernel("Trilu", static=(1,))
def trilu(cx, x, k=None, upper=1):
    x = _t(x)
    k = 0 if k is None else int(np.asarray(static(k, "Trilu", "k")).reshape(()))
    r, c = x.shape[-2], x.shape[-1]
    rows = np.arange(r)[:, None]
    cols = np.arange(c)[None, :]
    keep = (cols - rows >= k) if upper else (cols - rows <= k)
    return tf.where(tf.constant(keep), x, tf.zeros_like(x))


@kernel("DepthToSpace")
def depth_to_space(cx, x, blocksize, mode="DCR"):
    n, c, h, w = dims(x)
    b = blocksize
    if mode == "DCR":
        y = tf.transpose(tf.reshape(x, [n, b, b, c // (b * b), h, w]), [0, 3, 4, 1, 5, 2])
    else:
        y = tf.transpose(tf.reshape(x, [n, c // (b * b), b, b, h, w]), [0, 1, 4, 2, 5, 3])
    return tf.reshape(y, [n, c // (b * b), h * b, w * b])


@kernel("SpaceToDepth")
def space_to_depth(cx, x, blocksize):
    n, c, h, w = dims(x)
    b = blocksize
    y = tf.transpose(tf.reshape(x, [n, c, h // b, b, w // b, b]), [0, 3, 5, 1, 2, 4])
    return tf.reshape(y, [n, c * b * b, h // b, w // b])


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
                     "tensors are not supported by tf")


@kernel("Dropout", static=(1, 2))
def dropout(cx, x, ratio=None, training_mode=None, seed=None):
    if training_mode is not None and bool(np.asarray(static(training_mode, "Dropout",
                                                            "training_mode"))):
        raise ValueError("Dropout in training mode is random; HAL compiles inference graphs")
    x = _t(x)
    return x, tf.ones_like(x, tf.bool)
