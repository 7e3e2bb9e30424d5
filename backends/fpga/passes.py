"""The FPGA flow's own pass: make each accelerator layer's (and view's) nodes contiguous.

The partitioner cuts a graph into runs of consecutive nodes. A QDQ graph may list a weight's
DequantizeLinear anywhere before its Conv (topological order allows it), which would split a
layer over two segments; this pass moves each layer's input DQs to just before its op and the
activation / Q / pool chain to just after it. Both moves keep the order topological: a DQ of
a constant or of the layer input depends on nothing after the op, and the chain reads only
the op's result.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.passes.base import HalPass

from . import qdq


class GroupLayers(HalPass):
    hal_name = "GroupLayers"

    def call(self, model: ir.Model) -> PassResult:
        graph = model.graph
        found = qdq.analyse(graph)
        moved = 0
        for layer in found.steps:
            op = qdq.anchor(layer)
            k = layer.nodes.index(op)
            before, after = layer.nodes[:k], layer.nodes[k + 1:]
            order = list(graph)
            pos = {id(n): i for i, n in enumerate(order)}
            want_before = order[pos[id(op)] - len(before):pos[id(op)]]
            want_after = order[pos[id(op)] + 1:pos[id(op)] + 1 + len(after)]
            if [id(n) for n in want_before] == [id(n) for n in before] and \
                    [id(n) for n in want_after] == [id(n) for n in after]:
                continue
            graph.remove(before + after)
            if before:
                graph.insert_before(op, before)
            if after:
                graph.insert_after(op, after)
            moved += 1
        views = len(found.steps) - len(found.layers)
        self.detail = f"{len(found.layers)} accelerator layer(s)" + \
            (f", {views} view(s)" if views else "") + \
            (f", {moved} regrouped" if moved else "")
        return PassResult(model, bool(moved))
