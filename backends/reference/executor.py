"""The reference executable: the oracle's interpreter behind the Executable interface."""

from __future__ import annotations

from typing import Sequence

import onnx_ir as ir

from hal.backend import Buffer, Device, Executable, HostBuffer
from hal.oracle.interpreter import Interpreter


class ReferenceExecutable(Executable):
    def __init__(self, model: ir.Model, device: Device):
        self.interpreter = Interpreter(model.graph, device.string)
        super().__init__(device, self.interpreter.input_names, self.interpreter.output_names)

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        arrays = [b.array if isinstance(b, HostBuffer) else b.numpy() for b in buffers]
        return [HostBuffer(a, self.device) for a in self.interpreter(arrays)]
