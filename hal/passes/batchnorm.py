"""BatchNorm folding: Conv/Gemm -> BatchNormalization (inference) becomes one Conv/Gemm.

BN(y) = (y - mean) * k + bias with k = scale / sqrt(var + eps), so scaling the
weight's output channels by k and rewriting the bias gives the same result
with one op less. Done only when BN is the sole reader of the Conv/Gemm output.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.attributes import attribute
from hal.ir.graph import add_initializer, const, optional_const, replace_value, set_input, sole_consumer
from hal.ir.schemas import is_onnx
from hal.passes.base import HalPass


def _bn_factors(bn: ir.Node):
    """(k, shift) in float64 with BN(y) = y * k + shift, or None if BN cannot be folded."""
    if attribute(bn, "training_mode", 0):
        return None
    if any(o.uses() or o.is_graph_output() for o in bn.outputs[1:]):
        return None
    params = [const(v) for v in bn.inputs[1:5]]
    if len(params) != 4 or any(p is None for p in params):
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    eps = attribute(bn, "epsilon", 1e-5)
    k = scale / np.sqrt(var + eps)
    return k, bias - mean * k


def _fold_conv(g: ir.Graph, conv: ir.Node, k, shift) -> bool:
    w = const(conv.inputs[1])
    ok, b = optional_const(conv, 2)
    if w is None or not ok or k.shape != (w.shape[0],):
        return False
    w2 = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
    b2 = (b if b is not None else 0.0) * k + shift
    prefix = conv.name or "conv"
    set_input(conv, 1, add_initializer(g, w2.astype(w.dtype), f"{prefix}.folded_weight"))
    set_input(conv, 2, add_initializer(g, b2.astype(w.dtype), f"{prefix}.folded_bias"))
    return True


def _fold_gemm(g: ir.Graph, gemm: ir.Node, k, shift) -> bool:
    w = const(gemm.inputs[1])
    ok, c = optional_const(gemm, 2)
    if w is None or w.ndim != 2 or not ok:
        return False
    trans_b = attribute(gemm, "transB", 0)
    n_out = w.shape[0] if trans_b else w.shape[1]
    if k.shape != (n_out,):
        return False
    if c is not None:
        if c.size not in (1, n_out) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
            return False  # a C that varies along the rows cannot become a bias
        beta = attribute(gemm, "beta", 1.0)
        c = beta * np.broadcast_to(c.reshape(-1).astype(np.float64), (n_out,))
    w2 = w * (k[:, None] if trans_b else k[None, :])
    c2 = (c if c is not None else 0.0) * k + shift
    prefix = gemm.name or "gemm"
    set_input(gemm, 1, add_initializer(g, w2.astype(w.dtype), f"{prefix}.folded_weight"))
    set_input(gemm, 2, add_initializer(g, c2.astype(w.dtype), f"{prefix}.folded_bias"))
    gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
    return True


class BatchNormFolding(HalPass):
    hal_name = "BatchNormFolding"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        counts = {"Conv": 0, "Gemm": 0}
        for node in list(g):
            if not is_onnx(node, "Conv", "Gemm"):
                continue
            bn = sole_consumer(node.outputs[0])
            if bn is None or not is_onnx(bn, "BatchNormalization") or bn.inputs[0] is not \
                    node.outputs[0]:
                continue
            factors = _bn_factors(bn)
            if factors is None:
                continue
            fold = _fold_conv if node.op_type == "Conv" else _fold_gemm
            if not fold(g, node, *factors):
                continue
            replace_value(bn.outputs[0], node.outputs[0])
            g.remove(bn, safe=True)
            counts[node.op_type] += 1
        self.detail = ", ".join(f"folded {n} BatchNormalization into {op}"
                                for op, n in counts.items() if n)
        return PassResult(model, any(counts.values()))
