"""Convolution, pooling and normalization."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hal.oracle import op


def conv_pads(x_spatial, k, strides, dilations, pads, auto_pad):
    n = len(x_spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i in range(n):
            o = -(-x_spatial[i] // strides[i])
            total = max(0, (o - 1) * strides[i] + (k[i] - 1) * dilations[i] + 1 - x_spatial[i])
            lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            out.append((lo, total - lo))
        return out
    if auto_pad == "VALID":
        return [(0, 0)] * n
    pads = pads or [0] * (2 * n)
    return [(pads[i], pads[i + n]) for i in range(n)]


def _windows(xp, k, strides, dilations):
    """[N, C, *out, *k] view of the padded input."""
    n = len(k)
    eff = [(k[i] - 1) * dilations[i] + 1 for i in range(n)]
    v = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + n)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) \
        + tuple(slice(None, None, d) for d in dilations)
    return v[sl]


@op("Conv")
def conv(x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    n = x.ndim - 2
    k = list(w.shape[2:])
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    pp = conv_pads(x.shape[2:], k, strides, dilations, pads, auto_pad)
    xp = np.pad(x, [(0, 0), (0, 0)] + pp)
    win = _windows(xp, k, strides, dilations)  # N, C, *out, *k
    N, C = x.shape[:2]
    M = w.shape[0]
    cg, mg = C // group, M // group
    out_sp = win.shape[2:2 + n]
    letters = "hwdxyz"[:n]
    kl = "klmnop"[:n]
    outs = []
    for g in range(group):
        wg = win[:, g * cg:(g + 1) * cg]
        kg = w[g * mg:(g + 1) * mg]
        outs.append(np.einsum(f"bc{letters}{kl},mc{kl}->bm{letters}", wg, kg, optimize=True))
    y = np.concatenate(outs, axis=1) if group > 1 else outs[0]
    if b is not None:
        y = y + b.reshape((1, M) + (1,) * n)
    return y.astype(x.dtype, copy=False).reshape((N, M) + tuple(out_sp))


def pool_pads(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode):
    n = len(kernel_shape)
    pp = conv_pads(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad)
    if ceil_mode:
        extra = []
        for i in range(n):
            eff = (kernel_shape[i] - 1) * dilations[i] + 1
            size = x.shape[2 + i] + pp[i][0] + pp[i][1]
            out = -(-(size - eff) // strides[i]) + 1
            if (out - 1) * strides[i] >= x.shape[2 + i] + pp[i][0]:
                out -= 1  # the last window must start inside the input or left padding
            need = (out - 1) * strides[i] + eff - size
            extra.append(max(0, need))
        pp = [(lo, hi + e) for (lo, hi), e in zip(pp, extra)]
    return pp


@op("MaxPool")
def max_pool(x, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None):
    n = len(kernel_shape)
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    pp = pool_pads(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    fill = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    xp = np.pad(x, [(0, 0), (0, 0)] + pp, constant_values=fill)
    win = _windows(xp, kernel_shape, strides, dilations)
    axes = tuple(range(-n, 0))
    y = win.max(axis=axes).astype(x.dtype)
    # Indices: flat positions in the unpadded input (row-major, or column-major spatial dims)
    idx = np.arange(x.size, dtype=np.int64).reshape(x.shape)
    if storage_order == 1 and n >= 2:
        plane = int(np.prod(x.shape[2:]))
        spatial = np.arange(plane, dtype=np.int64).reshape(x.shape[2:][::-1]).T
        base = (np.arange(x.shape[0] * x.shape[1], dtype=np.int64) * plane).reshape(
            x.shape[0], x.shape[1], *([1] * n))
        idx = base + spatial
    idxp = np.pad(idx, [(0, 0), (0, 0)] + pp, constant_values=-1)
    iwin = _windows(idxp, kernel_shape, strides, dilations)
    window = int(np.prod(kernel_shape))  # not -1: a batch of 0 leaves nothing to infer it from
    flat = win.reshape(win.shape[:-n] + (window,))
    pick = np.argmax(flat, axis=-1)[..., None] if flat.size else np.zeros(
        flat.shape[:-1] + (1,), np.int64)
    indices = np.take_along_axis(iwin.reshape(iwin.shape[:-n] + (window,)), pick, axis=-1)[..., 0]
    return y, indices


@op("AveragePool")
def average_pool(x, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    n = len(kernel_shape)
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    explicit = conv_pads(x.shape[2:], kernel_shape, strides, dilations, pads, auto_pad)
    pp = pool_pads(x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode)
    xp = np.pad(x, [(0, 0), (0, 0)] + pp)
    axes = tuple(range(-n, 0))
    sums = _windows(xp, kernel_shape, strides, dilations).sum(axis=axes)
    # count of elements per window: real ones, or real + explicit padding
    ones = np.zeros((1, 1) + x.shape[2:], x.dtype)
    ones_p = np.pad(ones + 1, [(0, 0), (0, 0)] + explicit, constant_values=float(count_include_pad))
    extra = [(0, hi - e_hi) for (_, hi), (_, e_hi) in zip(pp, explicit)]
    ones_p = np.pad(ones_p, [(0, 0), (0, 0)] + extra)
    counts = _windows(ones_p, kernel_shape, strides, dilations).sum(axis=axes)
    return (sums / counts).astype(x.dtype)


@op("GlobalAveragePool")
def global_average_pool(x):
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


@op("GlobalMaxPool")
def global_max_pool(x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@op("BatchNormalization")
def batch_norm(x, scale, bias, mean, var, epsilon=1e-5, momentum=0.9, training_mode=0):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training_mode:
        axes = (0,) + tuple(range(2, x.ndim))
        batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
        y = (x - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + epsilon)
        y = y * scale.reshape(shape) + bias.reshape(shape)
        run_mean = mean * momentum + batch_mean * (1 - momentum)
        run_var = var * momentum + batch_var * (1 - momentum)
        return (y.astype(x.dtype), run_mean.astype(mean.dtype), run_var.astype(var.dtype))
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


@op("LayerNormalization")
def layer_norm(x, scale, bias=None, axis=-1, epsilon=1e-5, stash_type=1):
    axis = axis % x.ndim
    axes = tuple(range(axis, x.ndim))
    xf = x.astype(np.float64) if stash_type == 1 and x.dtype != np.float64 else x
    mean = xf.mean(axis=axes, keepdims=True)
    d = xf - mean
    var = (d * d).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + epsilon)
    y = d * inv * scale
    if bias is not None:
        y = y + bias
    return (y.astype(x.dtype), mean.astype(np.float32) if stash_type == 1 else mean,
            inv.astype(np.float32) if stash_type == 1 else inv)


@op("LRN")
def lrn(x, size, alpha=1e-4, beta=0.75, bias=1.0):
    """Each value divided by a power of the sum of squares over its ``size`` neighbouring
    channels: ``floor((size-1)/2)`` before it and ``ceil((size-1)/2)`` after it."""
    before, after = (size - 1) // 2, size // 2
    sq = np.pad(np.square(x.astype(np.float64)), [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
    square_sum = sliding_window_view(sq, size, axis=1).sum(axis=-1)
    return (x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype)


@op("Dropout")
def dropout(x, ratio=None, training_mode=None, seed=None):
    """Identity at inference. In training mode a ``seed`` makes the mask reproducible: it seeds
    numpy's legacy generator as ONNX's own reference does, so the masks match ONNX's cases."""
    ratio = 0.5 if ratio is None else float(ratio)
    if training_mode is None or not bool(training_mode) or ratio == 0:
        return x, np.ones(x.shape, dtype=bool)
    if not 0 <= ratio < 1:
        raise ValueError(f"Dropout ratio must be in [0, 1), got {ratio}")
    rng = np.random.RandomState(seed) if seed is not None else np.random.RandomState()
    mask = rng.uniform(0.0, 1.0, x.shape) >= ratio
    return (mask * x / (1 - ratio)).astype(x.dtype), mask
