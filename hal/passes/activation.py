"""Activation fusion: Conv/Gemm -> activation into one ``ai.hal`` FusedConv/FusedGemm.

The fused ops are HAL's own (``hal.ir.schemas``); they are not standard ONNX, so only
flows of backends that list them in ``Backend.hal_ops`` run this pass.
"""

from __future__ import annotations

import math

import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.attributes import attribute
from hal.ir.graph import optional_const, replace_value, sole_consumer
from hal.ir.schemas import ACTIVATIONS, HAL_DOMAIN, is_onnx
from hal.passes.base import HalPass

def activation_params(act: ir.Node) -> list[float] | None:
    """The fused node's ``activation_params`` for ``act``, or None if it cannot be fused."""
    if act.op_type == "LeakyRelu":
        return [float(attribute(act, "alpha", 0.01))]
    if act.op_type == "Gelu":  # the tanh approximation has no agreed params encoding: keep it
        approx = attribute(act, "approximate", "none")
        return [] if approx == "none" else None
    if act.op_type == "Clip":
        bounds = []
        for i, default in ((1, -math.inf), (2, math.inf)):
            ok, v = optional_const(act, i)
            if not ok or (v is not None and v.size != 1):
                return None  # run-time bounds
            bounds.append(float(v.reshape(())) if v is not None else default)
        return bounds
    return []


class ActivationFusion(HalPass):
    hal_name = "ActivationFusion"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        fused_ops: dict[str, int] = {}
        for node in list(g):
            if not is_onnx(node, "Conv", "Gemm"):
                continue
            act = sole_consumer(node.outputs[0])
            if act is None or not is_onnx(act, *ACTIVATIONS) or act.inputs[0] is not \
                    node.outputs[0]:
                continue
            params = activation_params(act)
            if params is None:
                continue
            attrs = [a for a in node.attributes.values()] + [
                ir.AttrString("activation", act.op_type),
                ir.AttrFloat32s("activation_params", params)]
            fused = ir.Node(HAL_DOMAIN, "Fused" + node.op_type, list(node.inputs),
                            attributes=attrs, name=f"{node.name}+{act.op_type}", version=1)
            g.insert_before(node, fused)
            replace_value(act.outputs[0], fused.outputs[0])
            g.remove([act, node], safe=True)
            key = f"{node.op_type}+{act.op_type}"
            fused_ops[key] = fused_ops.get(key, 0) + 1
        n = sum(fused_ops.values())
        if n:
            model.opset_imports[HAL_DOMAIN] = 1
        self.detail = (f"fused {n} activation(s): " + ", ".join(
            f"{k} x{v}" for k, v in sorted(fused_ops.items()))) if n else ""
        return PassResult(model, bool(n))
