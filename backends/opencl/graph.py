"""Compile-time preparation of a segment: constants, host-side inputs, and fusion.

Turns the IR graph into a list of ``LNode`` and, at lowering time, folds each
BatchNormalization into the Conv before it, fuses an activation into the op that
produces its input (Conv, Gemm, MatMul, elementwise, BatchNormalization) and a
constant bias ``Add`` into the MatMul before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from hal.ir.attributes import attribute_value

#: Activation codes shared with kernels/activation.h.
ACT = {"Relu": 1, "Clip": 2, "Sigmoid": 3, "Tanh": 4, "Gelu": 5, "LeakyRelu": 7}
ACT_NAMES = {"relu": "Relu", "clip": "Clip", "sigmoid": "Sigmoid", "tanh": "Tanh",
             "gelu": "Gelu", "leakyrelu": "LeakyRelu", "leaky_relu": "LeakyRelu"}
FUSE_INTO = {"Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization",
             "FusedConv", "FusedGemm"}

#: Inputs whose values (not just shapes) are needed to plan the kernels: op -> input indices.
HOST_INPUTS = {"Reshape": (1,), "Clip": (1, 2), "ReduceMean": (1,), "ReduceSum": (1,),
               "ReduceMax": (1,), "ReduceMin": (1,), "Squeeze": (1,), "Unsqueeze": (1,)}


@dataclass
class LNode:
    op: str
    name: str
    inputs: list[str | None]
    outputs: list[str | None]
    attrs: dict[str, Any]
    act: tuple[int, float, float] = (0, 0.0, 0.0)
    extra: dict[str, Any] = field(default_factory=dict)


def activation_of(op: str, attrs: dict, consts: dict, inputs: list) -> tuple[int, float, float] | None:
    """(code, p0, p1) for an activation node, or None if it cannot be fused."""
    if op == "Relu":
        return (ACT["Relu"], 0.0, 0.0)
    if op in ("Sigmoid", "Tanh"):
        return (ACT[op], 0.0, 0.0)
    if op == "Gelu":
        return (6 if attrs.get("approximate", "none") == "tanh" else 5, 0.0, 0.0)
    if op == "LeakyRelu":
        return (ACT[op], float(attrs.get("alpha", 0.01)), 0.0)
    if op == "Clip":
        lo, hi = -np.inf, np.inf
        for i, name in enumerate(inputs[1:3]):
            if name:
                if name not in consts:
                    return None
                v = float(np.asarray(consts[name]).reshape(()))
                lo, hi = (v, hi) if i == 0 else (lo, v)
        return (ACT["Clip"], lo, hi)
    return None


def fused_activation(attrs: dict) -> tuple[int, float, float]:
    """The activation of an ai.hal FusedConv/FusedGemm node (``activation`` + params)."""
    name = attrs.get("activation", "") or ""
    params = list(attrs.get("activation_params", []) or [])
    if not name:
        return (0, 0.0, 0.0)
    op = ACT_NAMES.get(name.lower(), name)
    if op == "Clip":
        lo = params[0] if len(params) > 0 else -np.inf
        hi = params[1] if len(params) > 1 else np.inf
        return (ACT["Clip"], float(lo), float(hi))
    if op == "LeakyRelu":
        return (ACT[op], float(params[0]) if params else 0.01, 0.0)
    if op == "Gelu":
        return (6 if params and params[0] == 1 else 5, 0.0, 0.0)
    if op in ACT:
        return (ACT[op], 0.0, 0.0)
    raise ValueError(f"unknown fused activation {name!r}")


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
        ln = LNode(node.op_type, node.name,
                   [v.name if v is not None else None for v in node.inputs],
                   [v.name if v is not None else None for v in node.outputs], attrs)
        if node.op_type in ("FusedConv", "FusedGemm"):
            ln.act = fused_activation(attrs)
        nodes.append(ln)
    inputs = [v.name for v in g.inputs if v.name not in consts]
    outputs = [v.name for v in g.outputs]
    return nodes, consts, inputs, outputs


def _constant_value(attrs: dict) -> np.ndarray:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            v = attrs[key]
            dtype = np.float32 if "float" in key else np.int64 if "int" in key else None
            return np.asarray(v, dtype=dtype)
    raise ValueError("Constant without a supported value attribute")


def host_inputs(nodes: list[LNode], consts: dict, inputs: list[str]) -> list[str]:
    """Segment inputs whose values the planner needs (e.g. a Reshape's shape fed at run time)."""
    need = []
    for n in nodes:
        for i in HOST_INPUTS.get(n.op, ()):
            if i < len(n.inputs) and n.inputs[i] in inputs and n.inputs[i] not in need:
                need.append(n.inputs[i])
    return need


def fuse(nodes: list[LNode], consts: dict, outputs: list[str]) -> list[LNode]:
    """BatchNorm folding, bias and activation fusion; returns the shortened node list."""
    uses: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            if i:
                uses[i] = uses.get(i, 0) + 1
    for o in outputs:
        uses[o] = uses.get(o, 0) + 1
    producer = {o: n for n in nodes for o in n.outputs if o}
    out: list[LNode] = []
    kept: set[int] = set()
    for n in nodes:
        src = producer.get(n.inputs[0]) if n.inputs and n.inputs[0] else None
        single = src is not None and uses.get(n.inputs[0], 0) == 1 and id(src) in kept \
            and src.act[0] == 0 and len([o for o in src.outputs if o]) == 1
        if single and n.op == "BatchNormalization" and src.op in ("Conv", "FusedConv") \
                and _fold_batchnorm(src, n, consts):
            continue
        if single and n.op == "Add" and src.op == "MatMul" and "bias" not in src.extra:
            other = n.inputs[1]
            if other in consts and np.asarray(consts[other]).ndim <= 1:
                src.extra["bias"] = np.asarray(consts[other], np.float32).reshape(-1)
                src.outputs = n.outputs
                continue
        if single and src.op in FUSE_INTO and n.op in ACT:
            act = activation_of(n.op, n.attrs, consts, n.inputs)
            if act is not None:
                src.act = act
                src.outputs = n.outputs
                continue
        out.append(n)
        kept.add(id(n))
    return out


def _fold_batchnorm(conv: LNode, bn: LNode, consts: dict) -> bool:
    names = bn.inputs[1:5]
    w_name = conv.inputs[1]
    if any(x not in consts for x in names) or w_name not in consts or bn.attrs.get(
            "training_mode", 0):
        return False
    b_name = conv.inputs[2] if len(conv.inputs) > 2 else None
    if b_name and b_name not in consts:
        return False
    scale, bias, mean, var = (np.asarray(consts[x], np.float64) for x in names)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    w = np.asarray(consts[w_name], np.float64)
    b = np.asarray(consts[b_name], np.float64) if b_name else np.zeros(w.shape[0])
    s = scale / np.sqrt(var + eps)
    new_w, new_b = f"{w_name}/bnfold/{bn.name}", f"{bn.name}/bnfold/bias"
    consts[new_w] = (w * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    consts[new_b] = ((b - mean) * s + bias).astype(np.float32)
    conv.inputs = [conv.inputs[0], new_w, new_b]
    conv.outputs = bn.outputs[:1]
    return True
