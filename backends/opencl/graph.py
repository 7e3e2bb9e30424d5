"""The graph the OpenCL backend lowers: its own fused ops, and a segment as a node list.

The backend's flow (``passes.py``) may hand it, besides ONNX ops and ai.hal FusedConv /
FusedGemm, ops of its own domain ``ai.hal.opencl``: ``Fused<Op>`` is the ONNX ``<Op>``
(same inputs and attributes) with ``activation`` / ``activation_params`` as in the ai.hal
fused ops; FusedMatMul takes an optional third input, a bias over the last axis.
``prepare`` turns a segment into ``LNode``s, one per node: fusing is the flow's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from hal.errors import BackendError
from hal.ir.attributes import attribute_value
from hal.ir.schemas import ACTIVATIONS, FUSED_BASE, HAL_DOMAIN, activation_code

#: the domain of the ops only this backend runs
OPENCL_DOMAIN = "ai.hal.opencl"
#: the ONNX ops that take a fused activation as ``ai.hal.opencl`` Fused<Op>
ACTIVATION_HOSTS = ("MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization")
OPENCL_OPS = frozenset("Fused" + op for op in ACTIVATION_HOSTS)

#: Inputs whose values (not just shapes) are needed to plan the kernels: op -> input indices.
HOST_INPUTS = {"Reshape": (1,), "Clip": (1, 2), "ReduceMean": (1,), "ReduceSum": (1,),
               "ReduceMax": (1,), "ReduceMin": (1,), "Squeeze": (1,), "Unsqueeze": (1,)}
NO_ACTIVATION = (0, 0.0, 0.0)


@dataclass
class LNode:
    op: str
    name: str
    inputs: list[str | None]
    outputs: list[str | None]
    attrs: dict[str, Any]
    act: tuple[int, float, float] = NO_ACTIVATION


def base_op(node: ir.Node) -> str:
    """The ONNX op a node computes: FusedConv -> Conv, ai.hal.opencl FusedAdd -> Add."""
    if node.domain == HAL_DOMAIN:
        return FUSED_BASE.get(node.op_type, node.op_type)
    if node.domain == OPENCL_DOMAIN:
        return node.op_type.removeprefix("Fused")
    return node.op_type


def fused_activation(attrs: dict, node: str = "") -> tuple[int, float, float]:
    """(code, p0, p1) the kernels take for a fused node's ``activation`` + params."""
    name = attrs.get("activation", "") or ""
    params = [float(p) for p in attrs.get("activation_params", []) or []]
    if not name:
        return NO_ACTIVATION
    if name not in ACTIVATIONS:
        raise BackendError(f"node {node!r} has activation {name!r}; fused ops take one of "
                           f"{', '.join(ACTIVATIONS)}")
    code = activation_code(name)
    if name == "Clip":
        return (code, params[0] if params else -np.inf, params[1] if len(params) > 1 else np.inf)
    if name == "LeakyRelu":
        return (code, params[0] if params else 0.01, 0.0)
    return (code, 0.0, 0.0)  # Gelu fuses in its exact form only (p0 = 0)


def prepare(model: ir.Model) -> tuple[list[LNode], dict[str, np.ndarray], list[str], list[str]]:
    g = model.graph
    consts = {name: v.const_value.numpy() for name, v in g.initializers.items()
              if v.const_value is not None}
    nodes = []
    for node in g:
        attrs = {k: attribute_value(a) for k, a in node.attributes.items()}
        if node.op_type == "Constant":
            consts[node.outputs[0].name] = _constant_value(attrs)
            continue
        fused = node.domain in (HAL_DOMAIN, OPENCL_DOMAIN)
        nodes.append(LNode(base_op(node), node.name,
                           [v.name if v is not None else None for v in node.inputs],
                           [v.name if v is not None else None for v in node.outputs], attrs,
                           fused_activation(attrs, node.name) if fused else NO_ACTIVATION))
    inputs = [v.name for v in g.inputs if v.name not in consts]
    outputs = [v.name for v in g.outputs]
    return nodes, consts, inputs, outputs


def _constant_value(attrs: dict) -> np.ndarray:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            v = attrs[key]
            dtype = np.float32 if "float" in key else np.int64 if "int" in key else None
            return np.asarray(v, dtype=dtype)
    raise BackendError("Constant without a supported value attribute (value, value_float(s), "
                       "value_int(s))")


def host_inputs(nodes: list[LNode], inputs: list[str]) -> list[str]:
    """Segment inputs whose values the planner needs (e.g. a Reshape's shape fed at run time)."""
    need = []
    for n in nodes:
        for i in HOST_INPUTS.get(n.op, ()):
            if i < len(n.inputs) and n.inputs[i] in inputs and n.inputs[i] not in need:
                need.append(n.inputs[i])
    return need
