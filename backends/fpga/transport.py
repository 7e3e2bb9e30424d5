"""What the FPGA driver needs from a way of reaching the accelerator.

The accelerator (``bitstreams/hal_int8``) is an AXI-lite controlled AXI master: the driver
writes buffer addresses and layer sizes into registers, sets ``ap_start``, waits for
``ap_done`` and reads ``status`` and ``cycles``. The kernel reads its operands and writes its
result in memory itself, so no DMA engine sits between host and kernel. A transport supplies
exactly those primitives; the driver (``driver.py``) is written once against them.

Transports: ``emu`` (register and memory model; ``ap_start`` runs the simulation library),
``opencl`` (pyopencl; registers become kernel arguments, memory is ``cl.Buffer``), ``pynq``
(``pynq.Overlay``, ``pynq.allocate``, MMIO on a board), ``rtl`` (the Verilated RTL core with
an AXI memory model, cycle-accurate).
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

#: AXI-lite register map of hal_int8 (Vitis HLS control-interface layout, offsets pinned by the
#: ``#pragma HLS INTERFACE ... offset=`` lines of hls/hal_int8.cpp; manifest.json repeats it).
#: 64-bit addresses take a low word at the offset and a high word at offset + 4.
CTRL = 0x00  # bit 0 ap_start (write 1), bit 1 ap_done, bit 2 ap_idle, bit 3 ap_ready
GIE, IER, ISR = 0x04, 0x08, 0x0C
ADDRESS_REGS = {"x": 0x10, "w": 0x1C, "bias": 0x28, "mult": 0x34, "shift": 0x40, "y": 0x4C}
SCALAR_REGS = {"op": 0x58, "n": 0x60, "c": 0x68, "h": 0x70, "wd": 0x78, "o": 0x80, "kh": 0x88,
               "kw": 0x90, "stride": 0x98, "pad": 0xA0, "groups": 0xA8, "act_min": 0xB0,
               "act_max": 0xB8, "pool": 0xC0}
STATUS = 0xC8  # 0 = done; error bits HAL_ERR_* of hls/hal_int8.h
CYCLES_LO, CYCLES_HI = 0xD0, 0xD4
AP_START, AP_DONE, AP_IDLE = 0x1, 0x2, 0x4


class Memory(abc.ABC):
    """One contiguous buffer the accelerator reaches by ``address`` (physical on a board)."""

    address: int
    nbytes: int

    @abc.abstractmethod
    def write(self, data: np.ndarray, offset: int = 0) -> None:
        """Copy host bytes in and make them visible to the accelerator (cache flush)."""

    @abc.abstractmethod
    def read(self, dtype, count: int, offset: int = 0) -> np.ndarray:
        """Make the accelerator's writes visible (cache invalidate) and copy them out."""

    def free(self) -> None:
        """Release the buffer (a no-op where the garbage collector does it)."""


class Transport(abc.ABC):
    """Registers, memory and the bitstream of one accelerator instance."""

    name: str  # "emu", "opencl", "pynq", "rtl"
    simulated: bool  # True unless real FPGA hardware computes the result

    @abc.abstractmethod
    def load(self, accelerator: Path, manifest: dict, target: str | None) -> None:
        """Program the bitstream of ``target`` (board transports) or build the model of it;
        raise BackendError naming the build command when the target is unbuilt."""

    @abc.abstractmethod
    def read_reg(self, offset: int) -> int: ...

    @abc.abstractmethod
    def write_reg(self, offset: int, value: int) -> None: ...

    @abc.abstractmethod
    def allocate(self, nbytes: int) -> Memory: ...

    def wait(self, timeout_s: float = 10.0) -> None:
        """Return once ``ap_done`` is set; BackendError after ``timeout_s``."""
        import time

        from hal.errors import BackendError

        end = time.monotonic() + timeout_s
        while not self.read_reg(CTRL) & AP_DONE:
            if time.monotonic() > end:
                raise BackendError(f"fpga@{self.name}: the accelerator did not finish within "
                                   f"{timeout_s} s (CTRL=0x{self.read_reg(CTRL):x})")

    def layer_limit(self, op: str, c: int, h: int, wd: int, o: int, kh: int, kw: int,
                    stride: int, pad: int, groups: int, pool: int) -> str | None:
        """Why this instance's build of hal_int8 refuses the layer beyond the specification's
        own limits (a smaller core), or None; the specification's are checked for all."""
        return None

    def max_batch(self) -> int | None:
        """The most images one start takes (the driver splits larger batches), None: any."""
        return None

    def close(self) -> None:
        """Release the device (nothing by default)."""
