"""Shapes known only at run time: tf traces one function for every batch size, so a
``Shape`` of a dynamic dim is a tensor, and so is a Reshape's shape computed from it."""

from __future__ import annotations

import numpy as np

from hal.backends.common.kernels.tensor import reshape as reshape_static
from hal.backends.tf_backend.framework import tf
from hal.backends.tf_backend.kernels import kernel


@kernel("Reshape", static=(1,))
def reshape(cx, x, shape, allowzero=0):
    if isinstance(shape, np.ndarray):
        return reshape_static(cx, x, shape, allowzero)
    if allowzero:
        return tf.reshape(x, shape)
    # a 0 copies the input's dim: the input's shape, padded to the target's length
    current = tf.shape(x, tf.int64)
    n = tf.shape(shape)[0]
    padded = tf.concat([current, tf.zeros([tf.maximum(n - tf.size(current), 0)], tf.int64)],
                       0)[:n]
    return tf.reshape(x, tf.where(tf.equal(shape, 0), padded, tf.cast(shape, tf.int64)))
