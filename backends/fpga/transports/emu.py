"""``fpga@emu``: hal_int8 modelled in software, always available, always simulated.

A register file and a byte-addressed memory: buffers get addresses in a 64-bit space as on a
board, the driver writes them into the registers, and ``ap_start`` runs the layer on the bytes
at those addresses through the simulation library (the HLS C++ kernel compiled for the host),
or through the numpy specification where no C++ compiler is installed. An address range that
lies outside every allocation is a bus error, raised rather than read.
"""

from __future__ import annotations

import bisect
import ctypes
import threading
from pathlib import Path

import numpy as np

from hal.errors import BackendError

from .. import spec
from ..qdq import check_limits
from ..transport import Memory, Transport
from .model import Call, RegisterFile

BASE = 0x1_0000_0000  # above 4 GiB, so the high address words are exercised
ALIGN = 4096


class ArrayMemory(Memory):
    """A buffer backed by a numpy byte array at a given address."""

    def __init__(self, address: int, nbytes: int, release=None):
        self.address, self.nbytes = address, nbytes
        self.data = np.zeros(nbytes, np.uint8)
        self._release = release

    def write(self, data: np.ndarray, offset: int = 0) -> None:
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if offset < 0 or offset + raw.size > self.nbytes:
            raise BackendError(f"write of {raw.size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        self.data[offset:offset + raw.size] = raw

    def read(self, dtype, count: int, offset: int = 0) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        if offset < 0 or offset + size > self.nbytes:
            raise BackendError(f"read of {size} bytes at offset {offset} overruns a "
                               f"{self.nbytes}-byte buffer")
        return self.data[offset:offset + size].view(dtype).copy()

    def free(self) -> None:
        if self._release is not None:
            self._release(self)
            self._release = None


class AddressSpace:
    """Allocations by address; ``view`` finds the bytes behind an address range."""

    def __init__(self, base: int = BASE):
        self._next = base
        self._starts: list[int] = []
        self._mems: dict[int, ArrayMemory] = {}
        # a buffer is freed when the last reference to it goes, in whichever thread that is
        # (re-entrant: a collection while allocating may free one)
        self._lock = threading.RLock()

    def allocate(self, nbytes: int) -> ArrayMemory:
        if nbytes < 1:
            raise BackendError(f"cannot allocate {nbytes} bytes")
        with self._lock:
            mem = ArrayMemory(self._next, nbytes, self._free)
            self._next += -(-nbytes // ALIGN) * ALIGN
            bisect.insort(self._starts, mem.address)
            self._mems[mem.address] = mem
        return mem

    def _free(self, mem: ArrayMemory) -> None:
        with self._lock:
            self._mems.pop(mem.address, None)
            i = bisect.bisect_left(self._starts, mem.address)
            if i < len(self._starts) and self._starts[i] == mem.address:
                del self._starts[i]

    def view(self, address: int, nbytes: int) -> np.ndarray:
        i = bisect.bisect_right(self._starts, address) - 1
        mem = self._mems.get(self._starts[i]) if i >= 0 else None
        if mem is None or address + nbytes > mem.address + mem.nbytes:
            raise BackendError(f"bus error: the accelerator accessed 0x{address:x}..+{nbytes}, "
                               f"outside every allocated buffer (a driver bug)")
        off = address - mem.address
        return mem.data[off:off + nbytes]


class Core:
    """One hal_int8 instance computing on memory it reaches through ``view(address, nbytes)``."""

    def __init__(self, view):
        self.view = view
        self.engine, self.engine_note = "simlib", ""
        try:
            from .. import simlib

            self._lib = simlib.load()
        except BackendError as exc:
            self._lib = None
            self.engine, self.engine_note = "spec", str(exc)

    def __call__(self, call: Call) -> tuple[int, int]:
        sizes = call.nbytes()
        if sizes is None:  # the kernel refuses these sizes before touching memory
            return 2 if call.args["op"] in (0, 1) else 1, 0
        bufs = {k: self.view(call.addr[k], max(sizes[k], 1)) for k in sizes}
        if self._lib is not None:
            return self._simlib(call, bufs)
        return self._spec(call, bufs)

    def _simlib(self, call: Call, bufs: dict) -> tuple[int, int]:
        p8, p32 = ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_int32)
        cycles = np.zeros(1, np.int64)
        a = call.args
        status = self._lib.hal_int8_sim_layer(
            *(bufs[k].ctypes.data_as(p8 if k in ("x", "w", "y") else p32)
              for k in ("x", "w", "bias", "mult", "shift", "y")),
            *(a[k] for k in ("op", "n", "c", "h", "wd", "o", "kh", "kw", "stride", "pad",
                             "groups", "act_min", "act_max", "pool")),
            cycles.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)))
        return int(status), int(cycles[0])

    def _spec(self, call: Call, bufs: dict) -> tuple[int, int]:
        a = dict(call.args)
        if a["op"] not in (0, 1):
            return 1, 0
        gemm = a["op"] == 1
        if gemm:
            a.update(h=1, wd=1, kh=1, kw=1, stride=1, groups=1, pad=0, pool=0)
        if check_limits("gemm" if gemm else "conv", a["c"], a["h"], a["wd"], a["o"], a["kh"],
                        a["kw"], a["stride"], a["pad"], a["groups"], a["pool"]):
            return 4, 0
        m, s = bufs["mult"].view(np.int32), bufs["shift"].view(np.int32)
        if m.min() < 0 or s.min() < 1 or s.max() > spec.MAX_SHIFT:
            return 8, 0
        n, c, o = a["n"], a["c"], a["o"]
        x, b = bufs["x"].view(np.int8), bufs["bias"].view(np.int32)
        if gemm:
            y = spec.gemm(x.reshape(n, c), bufs["w"].view(np.int8).reshape(o, c), b, m, s,
                          a["act_min"], a["act_max"])
        else:
            w = bufs["w"].view(np.int8).reshape(o, c // a["groups"], a["kh"], a["kw"])
            y = spec.conv2d(x.reshape(n, c, a["h"], a["wd"]), w, b, m, s, a["stride"], a["pad"],
                            a["groups"], a["act_min"], a["act_max"], a["pool"])
        bufs["y"][:] = y.reshape(-1).view(np.uint8)
        return 0, 0  # the specification has no notion of cycles


class EmuTransport(Transport):
    name = "emu"
    simulated = True

    def __init__(self):
        self.memory = AddressSpace()
        self.core = Core(self.memory.view)
        self.registers = RegisterFile(self.core)

    @property
    def engine(self) -> str:
        """What computes: "simlib" (the HLS kernel, host build) or "spec" (numpy)."""
        return self.core.engine

    def describe(self) -> str:
        return "simulation library" if self.engine == "simlib" else "numpy specification"

    def load(self, accelerator: Path, manifest: dict, target: str | None) -> None:
        pass  # the model is the kernel itself: nothing to program

    def read_reg(self, offset: int) -> int:
        return self.registers.read(offset)

    def write_reg(self, offset: int, value: int) -> None:
        self.registers.write(offset, value)

    def allocate(self, nbytes: int) -> ArrayMemory:
        return self.memory.allocate(nbytes)


def discover() -> list:
    from . import Found, self_test

    try:
        t = EmuTransport()
        self_test(t)
    except Exception as exc:  # noqa: BLE001 - discovery never raises
        return [Found(usable=False, simulated=True,
                      reason=f"emulator self-test failed: {type(exc).__name__}: {exc}")]
    engine = ("simulation library (HLS C++ kernel built for the host)" if t.engine == "simlib"
              else f"numpy specification ({t.core.engine_note})")
    return [Found(name=f"hal_int8 emulator: {engine}", simulated=True,
                  details={"engine": t.engine})]


def connect(handle, **options) -> EmuTransport:
    return EmuTransport()
