"""HAL's own fused ops (domain ``ai.hal``): Conv/Gemm followed by an activation.

``activation`` names an ONNX activation op; ``activation_params`` holds its float
parameters in ONNX order (Clip: min, max; LeakyRelu/Elu/Celu: alpha; HardSigmoid: alpha,
beta; Selu: alpha, gamma). The activation is applied to the conv/gemm result inside the same
traced function, where XLA or Grappler fuse it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hal.backends.tf_backend.kernels import KERNELS, NHWC, kernel, nhwc_kernel

_PARAMS = {"LeakyRelu": ("alpha",), "Elu": ("alpha",), "Celu": ("alpha",),
           "HardSigmoid": ("alpha", "beta"), "Selu": ("alpha", "gamma"),
           "ThresholdedRelu": ("alpha",)}
_CANONICAL = {n.lower(): n for n in ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Celu",
                                     "HardSigmoid", "HardSwish", "Selu", "Softplus", "Softsign",
                                     "Gelu", "ThresholdedRelu", "Mish", "Identity")}


def activate(cx, y, activation: str | None, params) -> tf.Tensor:
    if not activation:
        return y
    name = _CANONICAL.get(str(activation).lower())
    if name is None:
        raise ValueError(f"unknown fused activation {activation!r}; tf knows "
                         f"{sorted(_CANONICAL.values())}")
    params = [float(p) for p in (params or [])]
    if name == "Clip":
        lo = np.asarray(params[0], np.float32) if len(params) > 0 else None
        hi = np.asarray(params[1], np.float32) if len(params) > 1 else None
        return KERNELS["Clip"](cx, y, lo, hi)
    attrs = dict(zip(_PARAMS.get(name, ()), params))
    return KERNELS[name](cx, y, **attrs)


@nhwc_kernel("FusedConv")
def fused_conv_nhwc(cx, x, w, b=None, activation=None, activation_params=None, **conv):
    return activate(cx, NHWC["Conv"](cx, x, w, b, **conv), activation, activation_params)


@kernel("FusedConv")
def fused_conv(cx, x, w, b=None, activation=None, activation_params=None, **conv):
    return activate(cx, KERNELS["Conv"](cx, x, w, b, **conv), activation, activation_params)


@kernel("FusedGemm")
def fused_gemm(cx, a, b, c=None, activation=None, activation_params=None, **gemm):
    return activate(cx, KERNELS["Gemm"](cx, a, b, c, **gemm), activation, activation_params)
