"""Bias fusion: Conv -> Add(per-channel constant) into the Conv bias, and
MatMul(x 2-D, W constant) -> Add(bias constant) into one Gemm."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.graph import add_initializer, const, optional_const, replace_value, set_input, sole_consumer
from hal.ir.schemas import is_onnx
from hal.passes.base import HalPass


def _per_channel(c: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``c`` as a [channels] bias if adding it to an [N, C, *spatial] tensor adds per channel."""
    if c.size == 1 and c.ndim <= rank:
        return np.full(channels, c.reshape(()), c.dtype)
    if c.ndim > rank or c.ndim < rank - 1:
        return None  # a [C] constant would broadcast along the last spatial dim, not C
    want = (1,) * (c.ndim - (rank - 1)) + (channels,) + (1,) * (rank - 2)
    return c.reshape(-1) if c.shape == want else None


def _other_input(add: ir.Node, v: ir.Value) -> ir.Value | None:
    a, b = add.inputs
    if a is v and b is not v:
        return b
    if b is v and a is not v:
        return a
    return None


def _fuse_conv(g: ir.Graph, conv: ir.Node, add: ir.Node, c: np.ndarray) -> bool:
    w = const(conv.inputs[1])
    ok, b = optional_const(conv, 2)
    out = conv.outputs[0]
    rank = len(out.shape) if out.shape is not None else w.ndim if w is not None else 0
    if w is None or not ok or c.dtype != w.dtype or rank != w.ndim:
        return False
    bias = _per_channel(c, w.shape[0], rank)
    if bias is None:
        return False
    new_b = bias + (b if b is not None else 0)
    set_input(conv, 2, add_initializer(g, new_b.astype(w.dtype), f"{conv.name or 'conv'}.bias"))
    replace_value(add.outputs[0], out)
    g.remove(add, safe=True)
    return True


def _fuse_matmul(g: ir.Graph, mm: ir.Node, add: ir.Node, c: np.ndarray) -> bool:
    x, wv = mm.inputs
    w = const(wv)
    if w is None or w.ndim != 2 or x.shape is None or len(x.shape) != 2 or c.dtype != w.dtype:
        return False
    if c.size != w.shape[1] or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        return False  # only a row vector broadcasts over the batch like Gemm's C
    if c.size == 1 and w.shape[1] != 1:
        return False
    bias = add_initializer(g, c.reshape(-1), f"{mm.name or 'matmul'}.bias")
    gemm = ir.Node("", "Gemm", [x, wv, bias], name=f"{mm.name or 'matmul'}+bias")
    g.insert_before(mm, gemm)
    replace_value(add.outputs[0], gemm.outputs[0])
    g.remove([add, mm], safe=True)
    return True


class BiasFusion(HalPass):
    hal_name = "BiasFusion"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        counts = {"Conv": 0, "MatMul": 0}
        for node in list(g):
            if not is_onnx(node, "Conv", "MatMul"):
                continue
            add = sole_consumer(node.outputs[0])
            if add is None or not is_onnx(add, "Add"):
                continue
            other = _other_input(add, node.outputs[0])
            c = const(other)
            if c is None:
                continue
            fuse = _fuse_conv if node.op_type == "Conv" else _fuse_matmul
            if fuse(g, node, add, c):
                counts[node.op_type] += 1
        parts = [f"{counts['Conv']} Add into Conv bias"] * bool(counts["Conv"]) + \
            [f"{counts['MatMul']} MatMul+Add into Gemm"] * bool(counts["MatMul"])
        self.detail = "fused " + ", ".join(parts) if parts else ""
        return PassResult(model, any(counts.values()))
