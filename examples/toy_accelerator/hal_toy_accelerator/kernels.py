"""The toy accelerator's kernels (ONNX semantics, float32)."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def relu(x):
    return np.maximum(x, 0, dtype=x.dtype)


def matmul(a, b):
    return np.matmul(a, b)


def gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    y = alpha * np.dot(a.T if transA else a, b.T if transB else b)
    if c is not None:
        y = y + beta * c
    return y.astype(a.dtype, copy=False)


def _pads(spatial, k, strides, dil, pads, auto_pad):
    n = len(spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i in range(n):
            total = max(0, (-(-spatial[i] // strides[i]) - 1) * strides[i]
                        + (k[i] - 1) * dil[i] + 1 - spatial[i])
            lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            out.append((lo, total - lo))
        return out
    if auto_pad == "VALID" or not pads:
        return [(0, 0)] * n
    return [(pads[i], pads[i + n]) for i in range(n)]


def conv(x, w, b=None, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None):
    """im2col over a strided window view, then one matmul per group."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    n = x.ndim - 2
    k = list(w.shape[2:])
    strides = list(strides or [1] * n)
    dil = list(dilations or [1] * n)
    xp = np.pad(x, [(0, 0), (0, 0)] + _pads(x.shape[2:], k, strides, dil, pads, auto_pad))
    eff = [(k[i] - 1) * dil[i] + 1 for i in range(n)]
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + n)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dil)]
    batch, c_in = x.shape[:2]
    out_sp = win.shape[2:2 + n]
    m, cg = w.shape[0], c_in // group
    mg = m // group
    cols = np.moveaxis(win, 1, 1 + n)  # N, *out, C, *k
    cols = cols.reshape(batch, *out_sp, group, cg * int(np.prod(k)))
    wg = w.reshape(group, mg, cg * int(np.prod(k)))
    y = np.stack([cols[..., g, :] @ wg[g].T for g in range(group)], axis=-2)  # N, *out, G, M/G
    y = y.reshape(batch, *out_sp, m)
    y = np.moveaxis(y, -1, 1)
    if b is not None:
        y = y + b.reshape((1, m) + (1,) * n)
    return np.ascontiguousarray(y, dtype=x.dtype)


KERNELS = {"Conv": conv, "Gemm": gemm, "MatMul": matmul, "Relu": relu}
