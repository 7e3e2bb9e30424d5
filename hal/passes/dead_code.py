"""Dead-code removal: nodes nothing reads and initializers no node uses."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassResult
from onnx_ir.passes.common import RemoveUnusedNodesPass

from hal.passes.base import HalPass


class DeadCodeElimination(HalPass):
    hal_name = "DeadCodeElimination"

    def call(self, model: ir.Model) -> PassResult:
        nodes, inits = len(model.graph), len(model.graph.initializers)
        result = RemoveUnusedNodesPass()(model)  # keeps graph inputs and outputs as they are
        dn, di = nodes - len(model.graph), inits - len(model.graph.initializers)
        parts = [f"{dn} node(s)"] * bool(dn) + [f"{di} initializer(s)"] * bool(di)
        self.detail = "removed " + " and ".join(parts) if parts else ""
        return PassResult(result.model, bool(dn or di))
