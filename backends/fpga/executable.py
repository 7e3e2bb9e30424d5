"""Buffers in accelerator memory and the Executable of one FPGA segment."""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence

import numpy as np

from hal.backend import AcceleratorStats, Buffer, Device, Estimate, Executable
from hal.errors import BackendError, InputError

from .driver import Driver, LoadedLayer, output_shape
from .qdq import Layer, View
from .transport import Memory, Transport


class FpgaBuffer(Buffer):
    """An array in memory the accelerator reaches (a board's DDR, a cl.Buffer, the emulator's)."""

    def __init__(self, device: Device, memory: Memory, shape: tuple, dtype,
                 transport: Transport | None = None, base: FpgaBuffer | None = None):
        super().__init__(device, shape, dtype)
        self.memory, self.transport = memory, transport
        self.base = base  # a view keeps its base (which owns and frees the memory) alive
        if base is None:
            weakref.finalize(self, memory.free)

    def view(self, shape: tuple) -> FpgaBuffer:
        """The same bytes under another shape of as many elements (nothing is copied)."""
        if int(np.prod(shape, dtype=np.int64)) != int(np.prod(self.shape, dtype=np.int64)):
            raise BackendError(f"cannot view {list(self.shape)} as {list(shape)}")
        return FpgaBuffer(self.device, self.memory, tuple(shape), self.dtype, self.transport,
                          self.base or self)

    def _to_host(self) -> np.ndarray:
        count = int(np.prod(self.shape, dtype=np.int64))
        return self.memory.read(self.dtype, count).reshape(self.shape)


def put(device: Device, transport: Transport, array: np.ndarray) -> FpgaBuffer:
    mem = transport.allocate(max(array.nbytes, 1))
    if array.nbytes:
        mem.write(array)
    return FpgaBuffer(device, mem, array.shape, array.dtype, transport)


class FpgaExecutable(Executable):
    """The accelerator layers of one segment, run one start each, activations kept on the
    device between them. The last call's cycles (the accelerator's ``cycles`` register, per
    layer) and the estimates made from them are ``stats``; they and the call's wall time are
    also text in ``info`` for the placement report."""

    def __init__(self, device: Device, transport: Transport, steps: list[Layer | View],
                 input_names: Sequence[str], output_names: Sequence[str], manifest: dict,
                 engine: str):
        super().__init__(device, input_names, output_names)
        self.transport, self.driver = transport, Driver(transport)
        self.steps = steps
        self.layers = [s for s in steps if s.op != "view"]  # one accelerator start each
        self.loaded: dict[int, LoadedLayer] = {id(s): self.driver.load(s) for s in self.layers}
        self.boards = [(name, float(t["clock_mhz"])) for name, t in
                       manifest.get("targets", {}).items()
                       if t.get("clock_mhz") and "rtl" not in t]  # HLS-kernel cycles
        if transport.name == "rtl":  # the bitstreams of the simulated core's PE array
            self.boards = [(name, float(t["fmax_mhz"])) for name, t in
                           manifest.get("targets", {}).items()
                           if t.get("fmax_mhz") and transport.matches(t)]
        self.last_cycles: list[int] = []
        self.last_wall_s = 0.0
        sim = "simulated, " if transport.simulated else ""
        self.info["accelerator"] = f"hal_int8 on {device.string} ({sim}{engine})"
        self.info["layers"] = "; ".join(step.describe() for step in steps) + \
            (" (simulated)" if transport.simulated else "")

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        values: dict[str, FpgaBuffer] = {}
        for name, buf in zip(self.input_names, buffers):
            if buf.dtype != np.int8:
                raise InputError(f"{self.device.string}: segment input {name!r} must be int8, "
                                 f"got {buf.dtype}")
            if not isinstance(buf, FpgaBuffer) or buf.transport is not self.transport:
                buf = put(self.device, self.transport, np.ascontiguousarray(buf.numpy()))
            values[name] = buf
        t0 = time.perf_counter()
        cycles = []
        for layer in self.steps:
            x = values[layer.x]
            if tuple(x.shape[1:]) != tuple(layer.in_shape):
                raise InputError(f"{self.device.string}: {layer.describe()} expects input "
                                 f"[N, {', '.join(map(str, layer.in_shape))}], got "
                                 f"{list(x.shape)}")
            n = int(x.shape[0])
            if layer.op == "view":
                values[layer.y] = x.view((n, *layer.out_shape))
                continue
            shape = output_shape(layer, n)
            mem = self.transport.allocate(max(int(np.prod(shape)), 1))
            out = FpgaBuffer(self.device, mem, shape, np.int8, self.transport)
            if n:
                cycles.append(self.driver.run(self.loaded[id(layer)], x.memory, mem, n))
            values[layer.y] = out  # intermediates are freed with their buffers after the call
        self.last_wall_s = time.perf_counter() - t0
        self.last_cycles = cycles
        self._report(int(x.shape[0]) if self.steps else 0)
        missing = [o for o in self.output_names if o not in values]
        if missing:
            raise BackendError(f"{self.device.string}: segment outputs {missing} are not "
                               f"produced by its layers")
        return [values[o] for o in self.output_names]

    def _report(self, n: int) -> None:
        """``stats`` for the last call (cycles, estimates) and the text --explain shows."""
        sim = "simulated " if self.transport.simulated else ""
        tag = " (simulated)" if self.transport.simulated else ""
        cycles = dict(zip(map(id, self.layers), self.last_cycles))
        self.info["layers"] = "; ".join(
            step.describe() + (f": {cycles[id(step)]:,} cycles" if id(step) in cycles else "")
            for step in self.steps) + tag
        stats = AcceleratorStats(n, list(self.last_cycles), f"the {sim}accelerator's cycles "
                                 f"register")
        if stats.cycles and self.boards:
            for name, mhz in self.boards:
                s = stats.cycles / (mhz * 1e6)
                stats.estimates.append(Estimate(name, mhz, s * 1e3, n / s))
            stats.basis = ("estimated: cycle-accurate simulation x the Fmax nextpnr reported, "
                           "not measured" if self.transport.name == "rtl" else
                           f"ESTIMATED from the {sim}cycle count and the manifest clock, not "
                           f"measured")
        elif not stats.cycles:
            stats.basis = (f"no estimate: the {sim}accelerator reported no cycles (numpy "
                           f"specification engine)")
        self.stats = stats
        self.info["cycles"] = f"{stats.cycles:,} for batch {n}, from {stats.counter}"
        what = {"emu": "emulator", "opencl": "OpenCL runtime", "pynq": "pynq device"}.get(
            self.transport.name, self.transport.name)
        self.info["wall_ms"] = (f"{self.last_wall_s * 1e3:.3f} ms measured on the {sim}{what} "
                                f"(wall time of the last call)")
        if stats.basis:
            self.info["estimate"] = stats.estimate_text()
