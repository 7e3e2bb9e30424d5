"""Inference Dropout removal: a Dropout that is not in training mode passes its input through.

``hal.nn.Dropout`` records a real Dropout node so that training (``hal.train``) can switch it
on; at inference it is the identity, so every flow drops it before a backend sees it.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.graph import const, replace_value
from hal.ir.schemas import is_onnx
from hal.passes.base import HalPass


def _inference(node: ir.Node) -> bool:
    """True where the node surely does not drop: no training_mode, or a constant False, and
    nobody reads its mask."""
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        mode = const(node.inputs[2])
        if mode is None or bool(mode.reshape(-1)[0]):
            return False
    mask = node.outputs[1] if len(node.outputs) > 1 else None
    return mask is None or not (mask.uses() or mask.is_graph_output())


class InferenceDropoutElimination(HalPass):
    hal_name = "InferenceDropoutElimination"

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        removed = 0
        for node in list(g):
            if not is_onnx(node, "Dropout") or not _inference(node):
                continue
            x, y = node.inputs[0], node.outputs[0]
            if y.is_graph_output() and (x.is_graph_input() or x.is_graph_output()):
                continue  # an output cannot become an input (or another output) by renaming
            if y.is_graph_output():
                replace_value(y, x)
            else:
                y.replace_all_uses_with(x)
            g.remove(node, safe=True)
            removed += 1
        self.detail = f"removed {removed} inference Dropout(s)" if removed else ""
        return PassResult(model, bool(removed))
