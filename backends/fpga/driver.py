"""The hal_int8 driver, written once against ``Transport`` (registers, memory, wait).

Per compiled layer the constant operands (weights, bias, multipliers, shifts) go into device
memory once; per call the driver writes the buffer addresses and the layer's sizes into the
AXI-lite registers, sets ``ap_start``, waits for ``ap_done``, checks ``status`` and reads the
``cycles`` counter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hal.errors import BackendError

from . import transport as T
from .qdq import Layer, check_limits
from .simlib import OP_CODES, STATUS_BITS  # the kernel's op codes and status bits (no build)
from .transport import Memory, Transport


@dataclass
class LoadedLayer:
    """A layer whose constant operands are in device memory."""

    layer: Layer
    w: Memory
    bias: Memory
    mult: Memory
    shift: Memory

    def free(self) -> None:
        for mem in (self.w, self.bias, self.mult, self.shift):
            mem.free()


def output_shape(layer: Layer, n: int) -> tuple[int, ...]:
    o = layer.out_channels
    if layer.op == "gemm":
        return (n, o)
    _, h, wd = layer.in_shape
    kh, kw = layer.w.shape[2:]
    pk = max(layer.pool, 1)
    oh = (h + 2 * layer.pad - kh) // layer.stride + 1
    ow = (wd + 2 * layer.pad - kw) // layer.stride + 1
    return (n, o, oh // pk, ow // pk)


class Driver:
    """Runs layers on one accelerator instance reached through ``transport``."""

    def __init__(self, transport: Transport):
        self.transport = transport

    def upload(self, array: np.ndarray) -> Memory:
        array = np.ascontiguousarray(array)
        mem = self.transport.allocate(max(array.nbytes, 1))
        mem.write(array)
        return mem

    def load(self, layer: Layer) -> LoadedLayer:
        """Check the layer against the accelerator's limits and put its constants in memory."""
        args = layer.sizes()
        why = check_limits(*args) or self.transport.layer_limit(*args)
        if why:
            raise BackendError(f"hal_int8 cannot run {layer.describe()}: {why}")
        return LoadedLayer(layer, self.upload(layer.w.astype(np.int8)),
                           self.upload(layer.bias.astype(np.int32)),
                           self.upload(layer.m.astype(np.int32)),
                           self.upload(layer.s.astype(np.int32)))

    def run(self, loaded: LoadedLayer, x: Memory, y: Memory, n: int,
            timeout_s: float = 60.0) -> int:
        """``y`` = layer(``x``) for a batch of ``n``: one start, or one per part of the batch
        where this build of the core takes fewer images at once; the cycles, summed."""
        layer = loaded.layer
        step = self.transport.max_batch() or max(n, 1)
        x_bytes = int(np.prod(layer.in_shape))
        y_bytes = int(np.prod(output_shape(layer, 1)[1:]))
        cycles = 0
        for i in range(0, n, step):
            cycles += self._start(loaded, x.address + i * x_bytes, y.address + i * y_bytes,
                                  min(step, n - i), timeout_s)
        return cycles

    def _start(self, loaded: LoadedLayer, x: int, y: int, n: int, timeout_s: float) -> int:
        t, layer = self.transport, loaded.layer
        _, c, h, wd, _, kh, kw, *_ = layer.sizes()
        for name, address in (("x", x), ("w", loaded.w.address),
                              ("bias", loaded.bias.address), ("mult", loaded.mult.address),
                              ("shift", loaded.shift.address), ("y", y)):
            off = T.ADDRESS_REGS[name]
            t.write_reg(off, address & 0xFFFFFFFF)
            t.write_reg(off + 4, address >> 32)
        scalars = {"op": OP_CODES[layer.op], "n": n, "c": c, "h": h, "wd": wd,
                   "o": layer.out_channels, "kh": kh, "kw": kw, "stride": layer.stride,
                   "pad": layer.pad, "groups": layer.groups, "act_min": layer.act_min,
                   "act_max": layer.act_max, "pool": layer.pool}
        for name, value in scalars.items():
            t.write_reg(T.SCALAR_REGS[name], int(value) & 0xFFFFFFFF)
        t.write_reg(T.CTRL, T.AP_START)
        t.wait(timeout_s)
        status = t.read_reg(T.STATUS)
        cycles = t.read_reg(T.CYCLES_LO) | (t.read_reg(T.CYCLES_HI) << 32)
        if status:
            why = "; ".join(text for bit, text in STATUS_BITS.items() if status & bit) or \
                "unknown error bits"
            raise BackendError(f"fpga@{t.name}: hal_int8 refused {layer.describe()} "
                               f"(status 0x{status:x}): {why}")
        return cycles
