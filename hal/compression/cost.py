"""What a model costs: FLOPs and parameters, counted from the graph and ONNX shape inference.

    hal.compression.cost.flops(model, batch=64)      # int: FLOPs of one call at batch 64
    hal.compression.cost.params(model)               # int: parameter elements
    hal.compression.cost.layers(model)               # per Conv/Gemm/MatMul: FLOPs and params

What is counted, and what is not:

- FLOPs are those of the layers that do the work: ``Conv``, ``ConvTranspose``, ``Gemm``,
  ``MatMul`` (and HAL's ``FusedConv``/``FusedGemm``), two per multiply-add (a multiply and an
  add), e.g. a Conv is ``2 * N * C_out * H_out * W_out * (C_in / group) * kH * kW``. A
  MatMul of two activations (attention's ``Q @ K^T``) counts like one with a weight.
- Bias additions, BatchNormalization, activations, pooling, residual adds, softmax,
  normalization and every other elementwise or data-movement op are ignored: they are cheap
  next to the layers above (and most backends fuse them into those layers).
- Parameters are the elements of every initializer except the integer ones (int32/int64: shapes,
  axes, indices), so BatchNormalization's running mean and variance count, as ONNX stores
  them next to the weights; ``Dropout``'s ratio and ``Clip``'s bounds count as one each.

Shapes come from ONNX shape inference with the first dimension of every input that is symbolic
set to ``batch``; other symbolic dimensions (a sequence length) take their value from ``dims``
(by name). A layer whose shapes stay unknown has ``flops`` None in ``layers``, and ``flops``
raises ModelError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from hal.errors import ModelError
from hal.ir import shapes as S
from hal.ir.attributes import attribute
from hal.ir.model import Model
from hal.ir.schemas import FUSED_BASE, HAL_DOMAIN, ONNX_DOMAINS

#: the ops whose multiply-adds are counted
COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_INTEGER = (np.int32, np.int64)


@dataclass(frozen=True)
class LayerCost:
    """One counted layer: its position in the graph, name, op, FLOPs (None: shapes unknown)
    and parameter elements (those of its constant inputs)."""

    index: int
    name: str
    op: str
    flops: int | None
    params: int

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "op": self.op, "flops": self.flops,
                "params": self.params}


def _op(node) -> str | None:
    if node.domain in ONNX_DOMAINS:
        return node.op_type
    if node.domain == HAL_DOMAIN:
        return FUSED_BASE.get(node.op_type)
    return None


def _model(model: Any) -> Model:
    if isinstance(model, Model):
        return model
    from hal.frontends import to_model

    return to_model(model)


def _shapes(model: Model, batch: int, dims: dict[str, int] | None) -> dict:
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ModelError(f"batch must be a positive int, got {batch!r}")
    proto = model.to_proto()
    inits = {i.name for i in proto.graph.initializer}
    dims = dict(dims or {})
    for vi in proto.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        for i, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param") or not d.HasField("dim_value"):
                name = d.dim_param
                value = int(batch) if i == 0 else dims.get(name)
                if value is not None:
                    d.Clear()
                    d.dim_value = int(value)
    return S.infer(proto)


def _size(shape) -> int | None:
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return int(prod(shape))


def _node_flops(node, op: str, shape) -> int | None:
    ins = [v for v in node.inputs]
    out = shape(node.outputs[0])
    if op == "Conv":
        w = shape(ins[1])
        n_out, per = _size(out), _size(w[1:]) if w is not None else None
        return None if n_out is None or per is None else 2 * n_out * per
    if op == "ConvTranspose":
        x, w = shape(ins[0]), shape(ins[1])
        n_in, per = _size(x), _size(w[1:]) if w is not None else None
        return None if n_in is None or per is None else 2 * n_in * per
    if op == "Gemm":
        a = shape(ins[0])
        if a is None or len(a) != 2 or _size(out) is None:
            return None
        k = a[0] if attribute(node, "transA", 0) else a[1]
        return 2 * _size(out) * k if isinstance(k, int) else None
    if op == "MatMul":
        a = shape(ins[0])
        if not a or _size(out) is None or not isinstance(a[-1], int):
            return None
        return 2 * _size(out) * a[-1]
    return None


def layers(model: Any, batch: int = 1, dims: dict[str, int] | None = None) -> list[LayerCost]:
    """Every Conv/ConvTranspose/Gemm/MatMul (and fused) node in graph order with its FLOPs at
    ``batch`` and its parameter elements (see the module's docstring for what counts)."""
    m = _model(model)
    info = _shapes(m, batch, dims)

    def shape(v):
        if v is None:
            return None
        if v.const_value is not None:
            return tuple(int(d) for d in v.const_value.shape)
        return info.get(v.name, (None, None))[0]

    out = []
    for i, node in enumerate(m.graph):
        op = _op(node)
        if op not in COUNTED:
            continue
        n_params = 0
        for v in node.inputs:
            if v is not None and v.const_value is not None and not v.is_graph_input():
                if v.const_value.dtype.numpy() not in _INTEGER:
                    n_params += _size(shape(v)) or 0
        out.append(LayerCost(i, node.name or f"{op}#{i}", op, _node_flops(node, op, shape),
                             n_params))
    return out


def flops(model: Any, batch: int = 1, dims: dict[str, int] | None = None) -> int:
    """FLOPs of one call at ``batch``: 2 per multiply-add of every Conv/ConvTranspose/Gemm/
    MatMul (elementwise ops ignored). ``model``: anything ``hal.compile`` takes."""
    total = 0
    for layer in layers(model, batch, dims):
        if layer.flops is None:
            raise ModelError(f"the FLOPs of {layer.op} node {layer.name!r} are unknown: shape "
                             f"inference left its shapes open; give the other symbolic "
                             f"dimensions a size with dims={{'name': size}}")
        total += layer.flops
    return total


def params(model: Any) -> int:
    """Parameter elements: every initializer except the integer ones (shapes, axes)."""
    m = _model(model)
    total = 0
    inputs = {v.name for v in m.graph.inputs}
    for name, v in m.graph.initializers.items():
        if name in inputs or v.const_value is None:
            continue
        if v.const_value.dtype.numpy() in _INTEGER:
            continue
        total += int(prod(int(d) for d in v.const_value.shape))
    return total

