"""HAL's fused ops (domain ai.hal): Conv/Gemm followed by an activation."""

from __future__ import annotations

import numpy as np
from hal.oracle import OPS, op


def _activate(y, activation, params):
    if activation == "Clip":
        lo, hi = params
        return OPS["Clip"](y, np.array(lo, y.dtype), np.array(hi, y.dtype))
    if activation == "LeakyRelu":
        return np.where(y >= 0, y, y * params[0]).astype(y.dtype)
    return OPS[activation](y)


@op("FusedConv")
def fused_conv(x, w, b=None, activation="Relu", activation_params=(), **conv):
    return _activate(OPS["Conv"](x, w, b, **conv), activation, list(activation_params))


@op("FusedGemm")
def fused_gemm(a, b, c=None, activation="Relu", activation_params=(), **gemm):
    return _activate(OPS["Gemm"](a, b, c, **gemm), activation, list(activation_params))
