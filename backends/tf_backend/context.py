"""How a segment computes in TensorFlow: the shared lowering's ``Context`` for tf."""

from __future__ import annotations

from typing import ContextManager

import numpy as np

from hal.backends.common.context import Context
from hal.backends.tf_backend import xp
from hal.backends.tf_backend.framework import tf


class TfContext(Context):
    """tf as ``xp``; numpy values become graph constants of the type they meet."""

    backend = "tf"
    xp = xp

    def cast(self, x, dtype):
        dtype = tf.as_dtype(dtype)
        if isinstance(x, (np.ndarray, np.generic)):  # cast in numpy: one ready constant
            return tf.constant(np.asarray(x).astype(dtype.as_numpy_dtype, copy=False))
        return tf.cast(x, dtype) if x.dtype != dtype else x

    def host(self, value) -> np.ndarray:
        return value.numpy() if isinstance(value, tf.Tensor) else np.asarray(value)

    def compile_time(self) -> ContextManager:
        return tf.init_scope()  # eager, outside the trace

    def output(self, value, dtype):
        value = value if isinstance(value, tf.Tensor) else tf.constant(np.asarray(value))
        if dtype is None:
            return tf.identity(value)
        want = tf.as_dtype(dtype)
        return tf.cast(value, want) if value.dtype != want else tf.identity(value)
