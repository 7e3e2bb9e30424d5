"""HAL's own operator contract on top of ONNX: its domain, its fused ops, their activations.

A fused node (``ai.hal`` FusedConv / FusedGemm) has the inputs and attributes of the ONNX
Conv / Gemm it replaces plus ``activation`` (the ONNX op type of the activation it absorbed)
and ``activation_params`` ([min, max] for Clip, [alpha] for LeakyRelu, [] otherwise).
Backends, passes and the validator read these names from here and nowhere else.
"""

from __future__ import annotations

import onnx_ir as ir

#: the op domain of HAL's own ops
HAL_DOMAIN = "ai.hal"
#: the two spellings of ONNX's default domain
ONNX_DOMAINS = ("", "ai.onnx")
#: HAL's own ops: Conv/Gemm with an activation fused in
FUSED_OPS = frozenset({"FusedConv", "FusedGemm"})
#: quantization-aware training's fake quantization: ``FakeQuantize(x, scale?)`` with ``qmin``,
#: ``qmax``, ``axis`` and ``power_of_two``; see ``hal.passes.quantize`` (``fake=True``)
FAKE_QUANTIZE = "FakeQuantize"
#: every op of HAL's domain
HAL_OPS = FUSED_OPS | {FAKE_QUANTIZE}
#: the ONNX op a fused op extends
FUSED_BASE = {"FusedConv": "Conv", "FusedGemm": "Gemm"}
#: activations a fused op may carry, in the order of their numeric codes (``activation_code``);
#: kernels written in C or OpenCL take the code, generated from this tuple
ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "Gelu")


def activation_code(name: str) -> int:
    """The numeric code of activation ``name`` in native kernels; 0 is reserved for none."""
    return ACTIVATIONS.index(name) + 1


def is_onnx(node: ir.Node, *op_types: str) -> bool:
    """Whether ``node`` is a standard ONNX op (of one of ``op_types`` when any are given)."""
    return node.domain in ONNX_DOMAINS and (not op_types or node.op_type in op_types)


def is_fused(node: ir.Node) -> bool:
    """Whether ``node`` is one of HAL's fused ops."""
    return node.domain == HAL_DOMAIN and node.op_type in FUSED_OPS
