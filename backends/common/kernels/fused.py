"""HAL's fused ops (domain ``ai.hal``): a Conv or Gemm with its activation, in ``FUSED``.

The fused node carries the Conv/Gemm's inputs and attributes plus ``activation`` (an ONNX
activation op) and ``activation_params`` (``hal.ir.schemas``). The activation is applied
inside the same traced function, where the framework's compiler fuses it; a backend that
lays Conv out its own way (tf channels-last) reuses ``activate``.
"""

from __future__ import annotations

import numpy as np

from hal.backends.common.kernels import FUSED
from hal.errors import BackendError
from hal.ir.schemas import ACTIVATIONS, HAL_DOMAIN

#: an activation's float parameters, in ``activation_params`` order (Clip: min, max)
PARAMS = {"LeakyRelu": ("alpha",)}


def activate(cx, y, activation: str | None, params) -> object:
    if not activation:
        return y
    if activation not in ACTIVATIONS:
        raise BackendError(f"unknown fused activation {activation!r}; HAL's fused ops carry "
                           f"one of {list(ACTIVATIONS)}")
    params = [float(p) for p in (params or [])]
    if activation == "Clip":
        bounds = [np.asarray(p, np.float32) for p in params] + [None, None]
        return cx.kernel("Clip")(cx, y, bounds[0], bounds[1])
    return cx.kernel(activation)(cx, y, **dict(zip(PARAMS.get(activation, ()), params)))


@FUSED.kernel("FusedConv", domain=HAL_DOMAIN)
def fused_conv(cx, x, w, b=None, activation=None, activation_params=None, **conv):
    return activate(cx, cx.kernel("Conv")(cx, x, w, b, **conv), activation, activation_params)


@FUSED.kernel("FusedGemm", domain=HAL_DOMAIN)
def fused_gemm(cx, a, b, c=None, activation=None, activation_params=None, **gemm):
    return activate(cx, cx.kernel("Gemm")(cx, a, b, c, **gemm), activation, activation_params)
