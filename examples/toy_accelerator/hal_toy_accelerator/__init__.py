"""A toy accelerator for HAL: the smallest complete out-of-tree backend.

It runs Conv, Gemm, MatMul and Relu with numpy, but on "device memory" of its
own (a private arena), so everything else in a model falls back to the CPU and
every value crossing the boundary is a counted host<->device transfer, just as
with a real accelerator.
"""

from __future__ import annotations

import numpy as np

from hal.backend import Backend, Buffer, CompileOptions, Device, Executable
from hal.device import DeviceInfo
from hal.errors import BackendError

from hal_toy_accelerator import kernels


class ToyMemory:
    """The accelerator's memory: host code can reach it only through copies."""

    def __init__(self) -> None:
        self._blocks: dict[int, np.ndarray] = {}
        self._next = 1

    def alloc_from(self, array: np.ndarray) -> int:
        handle, self._next = self._next, self._next + 1
        self._blocks[handle] = np.array(array, copy=True, order="C")
        return handle

    def read(self, handle: int) -> np.ndarray:
        return self._blocks[handle]

    def free(self, handle: int) -> None:
        self._blocks.pop(handle, None)

    @property
    def allocated_bytes(self) -> int:
        return sum(b.nbytes for b in self._blocks.values())


class ToyBuffer(Buffer):
    def __init__(self, memory: ToyMemory, handle: int, device: Device):
        data = memory.read(handle)
        super().__init__(device, data.shape, data.dtype)
        self.memory, self.handle = memory, handle

    def _to_host(self) -> np.ndarray:
        return self.memory.read(self.handle).copy()

    def __del__(self) -> None:
        self.memory.free(self.handle)


class ToyExecutable(Executable):
    """Interprets the segment node by node; values never leave toy memory."""

    def __init__(self, model, device: Device, memory: ToyMemory):
        g = model.graph
        super().__init__(device, [v.name for v in g.inputs if v.name not in g.initializers],
                         [v.name for v in g.outputs])
        self.memory = memory
        self.weights = {n: v.const_value.numpy() for n, v in g.initializers.items()}
        self.steps = [(kernels.KERNELS[node.op_type], [v.name if v else "" for v in node.inputs],
                       [v.name for v in node.outputs],
                       {k: a.value for k, a in node.attributes.items()}) for node in g]
        self.info = {"kernels": sorted({n.op_type for n in g}), "memory": "toy arena"}

    def run(self, buffers):
        env = dict(self.weights)
        for name, buf in zip(self.input_names, buffers):
            if not isinstance(buf, ToyBuffer):
                raise BackendError(f"toy: input {name!r} is a {type(buf).__name__}, not toy memory")
            env[name] = buf.memory.read(buf.handle)
        for kernel, ins, outs, attrs in self.steps:
            env[outs[0]] = kernel(*[env[n] if n else None for n in ins], **attrs)
        return [ToyBuffer(self.memory, self.memory.alloc_from(env[n]), self.device)
                for n in self.output_names]


class ToyBackend(Backend):
    name = "toy"
    kinds = ("toy",)
    priority = 10
    ops = frozenset(kernels.KERNELS)

    def __init__(self) -> None:
        self.memory = ToyMemory()

    def probe(self) -> list[DeviceInfo]:
        x = np.array([[-1.0, 2.0]], np.float32)
        ok = np.array_equal(kernels.relu(x), [[0.0, 2.0]])
        return [DeviceInfo("toy", 0, self.name, name="toy accelerator (numpy kernels, own memory)",
                           usable=ok, reason="" if ok else "self-test failed",
                           host_memory=False)]

    def supports(self, node, device) -> bool | str:
        ok = super().supports(node, device)
        if ok is not True:
            return ok
        if any(v is not None and v.dtype is not None and v.dtype.numpy() != np.float32
               for v in node.inputs):
            return "toy computes in float32 only"
        return True

    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        if options.precision != "fp32":
            raise BackendError(f"toy runs fp32 only, not {options.precision}")
        return ToyExecutable(model, device, self.memory)

    def put(self, array: np.ndarray, device: Device) -> Buffer:
        return ToyBuffer(self.memory, self.memory.alloc_from(array), device)
