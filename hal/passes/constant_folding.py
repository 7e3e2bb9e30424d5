"""Constant folding: nodes whose inputs are all constants become initializers.

Values are computed with the reference kernels, so folding means exactly what
``cpu@reference`` would have computed. ``Shape`` of a statically known shape is
folded too. Results above ``size_limit`` elements are left to run time: folding
would only make the model file bigger (think Expand or ConstantOfShape).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from hal.ir.attributes import attribute
from hal.ir.graph import add_initializer, const
from hal.oracle import OPS
from hal.oracle.interpreter import evaluate
from hal.passes.base import HalPass

FOLD_LIMIT = 1 << 20  # elements
#: ops whose result is not a function of their inputs alone
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout"}


def _shape_of(node: ir.Node) -> np.ndarray | None:
    x = node.inputs[0]
    if x is None or x.shape is None or not x.shape.is_static():
        return None
    dims = [int(d) for d in x.shape]
    start, end = attribute(node, "start", 0), attribute(node, "end")
    return np.array(dims[start:end], np.int64)  # slicing clamps like ONNX does


def _too_big(v: ir.Value, limit: int) -> bool:
    return v.shape is not None and v.shape.is_static() and int(np.prod(list(v.shape))) > limit


class ConstantFolding(HalPass):
    hal_name = "ConstantFolding"

    def __init__(self, size_limit: int = FOLD_LIMIT, keep_dequantize: bool = False) -> None:
        super().__init__()
        self.size_limit = size_limit
        # int8 flows: DequantizeLinear(int8 constant) is how a QDQ model carries its weights;
        # folding it would turn them back into float
        self.keep_dequantize = keep_dequantize

    def _evaluate(self, node: ir.Node) -> list[np.ndarray] | None:
        if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED:
            return None
        if self.keep_dequantize and node.op_type == "DequantizeLinear":
            return None
        if any(o.is_graph_output() for o in node.outputs) or \
                any(_too_big(o, self.size_limit) for o in node.outputs):
            return None
        if node.op_type == "Shape":
            s = _shape_of(node)
            return None if s is None else [s]
        if node.op_type not in OPS or not node.inputs:
            return None
        args = [const(v) for v in node.inputs]
        if any(a is None and v is not None for a, v in zip(args, node.inputs)):
            return None
        if sum(a.size for a in args if a is not None) > self.size_limit:
            return None
        try:
            with np.errstate(all="ignore"):
                arrays = evaluate(node, args)
        except Exception:  # noqa: BLE001  (a kernel rejecting its input: leave it to run time)
            return None
        if len(arrays) < len([o for o in node.outputs if o.uses()]) or \
                any(a.size > self.size_limit for a in arrays):
            return None
        return arrays

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        lifted = LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        folded: dict[str, int] = {}
        for node in list(g):
            arrays = self._evaluate(node)
            if arrays is None:
                continue
            for out, arr in zip(node.outputs, arrays):
                if out.uses():
                    name = out.name or f"{node.name}.folded"
                    out.name = None
                    if out.type is not None and out.type.dtype != ir.DataType.UNDEFINED:
                        arr = arr.astype(out.type.dtype.numpy(), copy=False)
                    out.replace_all_uses_with(add_initializer(g, arr, name))
            g.remove(node, safe=True)
            folded[node.op_type] = folded.get(node.op_type, 0) + 1
        n = sum(folded.values())
        self.detail = (f"folded {n} node(s) into constants ("
                       + ", ".join(f"{k} x{v}" for k, v in sorted(folded.items())) + ")") if n else ""
        if lifted.modified:
            self.detail = "; ".join(filter(None, ["lifted Constant nodes to initializers",
                                                  self.detail]))
        return PassResult(model, bool(n) or lifted.modified)
