"""The FPGA flow's own pass: find the accelerator layers, for ``--explain``.

It changes nothing: the backend's ``claim`` hands each layer (and view) to the partitioner as
one group, and the partitioner keeps a group's nodes together.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.passes.base import HalPass

from . import qdq


class FindLayers(HalPass):
    hal_name = "FindLayers"

    def call(self, model: ir.Model) -> PassResult:
        found = qdq.analyse(model.graph)
        views = len(found.steps) - len(found.layers)
        self.detail = f"{len(found.layers)} accelerator layer(s)" + \
            (f", {views} view(s)" if views else "")
        return PassResult(model, False)
