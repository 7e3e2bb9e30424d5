"""The tf kernel table: the shared kernels and HAL's fused ops, with tf's own in ``nn``
(products, convolution, windowed pools) and ``tensor`` (shapes known only at run time).
Its registrations are the backend's op list (``TfBackend.ops``, ``hal_ops``); importing it
does not import TensorFlow.

``CHANNELS_LAST`` holds the channels-last kernels of the layout-sensitive ops
(``fn(cx, x_nhwc, *rest, **attrs) -> y_nhwc``): TensorFlow's CPU convolutions and pools run
channels-last only, so the ONNX (channels-first) kernels transpose around them, and the
layout trace (``layout``) keeps tensors channels-last between such ops instead.
"""

from __future__ import annotations

from hal.backends.common.kernels import COMMON, FUSED
from hal.backends.common.table import KernelTable

TABLE = KernelTable(COMMON, FUSED)
CHANNELS_LAST = KernelTable()
kernel = TABLE.kernel
channels_last = CHANNELS_LAST.kernel

from hal.backends.tf_backend.kernels import nn, tensor  # noqa: E402,F401
