"""Shape and data-movement ops."""

from __future__ import annotations

import numpy as np

from hal.oracle import op


@op("Reshape")
def reshape(x, shape, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def flatten(x, axis=1):
    axis = axis % x.ndim if x.ndim else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(lead, -1) if x.size else x.reshape(lead, int(np.prod(x.shape[axis:])))


@op("Transpose")
def transpose(x, perm=None):
    return np.transpose(x, perm)


@op("Concat")
def concat(*xs, axis=0):
    return np.concatenate(xs, axis=axis)
