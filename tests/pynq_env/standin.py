"""A stand-in ``pynq.Device``: what the pynq transport sees on a board, computed in software.

Registered through pynq's own device discovery (a ``Device`` subclass with ``_probe_`` and
``_probe_priority_``, collected by ``DeviceMeta``), so ``pynq.Device.devices``, ``pynq.allocate``,
``pynq.MMIO`` and ``pynq.Overlay`` run their real code against it. Registers (pynq's
``REGISTER_RW`` capability) go to a model of hal_int8's AXI-lite port whose ``ap_start`` computes
through the simulation library on the buffers behind the physical addresses it was given;
buffers are real ``PynqBuffer`` arrays with a ``device_address``, and ``flush``/``invalidate``
are counted so the test can check the driver keeps the caches coherent.
"""

from __future__ import annotations

import os

import numpy as np
from hal.backends.fpga.transports.emu import Core
from hal.backends.fpga.transports.model import RegisterFile
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

ENABLE = "HAL_PYNQ_STANDIN"  # the stand-in only shows up where a test asks for it
DDR_BASE = 0x4000_0000


class StandInMemory:
    """``device.default_memory``: physically contiguous buffers, here numpy arrays."""

    def __init__(self, device):
        self.device = device
        self.next = DDR_BASE
        self.buffers: list[PynqBuffer] = []

    def allocate(self, shape, dtype, **kwargs):
        buf = PynqBuffer(shape, dtype, device=self.device, device_address=self.next, bo=0,
                         coherent=False)
        self.next += -(-buf.nbytes // 4096) * 4096
        self.buffers.append(buf)
        return buf

    def view(self, address: int, nbytes: int) -> np.ndarray:
        for buf in self.buffers:
            start = buf.device_address
            if start <= address and address + nbytes <= start + buf.nbytes:
                raw = buf.view(np.ndarray).reshape(-1).view(np.uint8)
                return raw[address - start:address - start + nbytes]
        raise RuntimeError(f"AXI decode error: 0x{address:x}..+{nbytes} is outside every buffer")


class HalStandInDevice(Device):
    """One board-like device whose hal_int8 is the simulation library."""

    _probe_priority_ = 900
    hal_simulated = True  # HAL labels it simulated: nothing here is hardware

    @classmethod
    def _probe_(cls):
        return [cls()] if os.environ.get(ENABLE) else []

    def __init__(self):
        super().__init__("hal_standin0")
        self.name = "hal_int8 stand-in (simulation library)"
        self.capabilities = {"REGISTER_RW": True}
        self.default_memory = StandInMemory(self)
        self.core = Core(self.default_memory.view)
        self.blocks: dict[int, RegisterFile] = {}  # base address -> register file
        self.flushes = self.invalidates = 0
        self.bitfile_name = None
        self.timestamp = ""

    def get_bitfile_metadata(self, bitfile_name, partial=False):
        """pynq's own HWH parser (what EmbeddedDevice uses, minus the xclbin it synthesizes
        with XRT's xclbinutil, which only a board image has)."""
        from pathlib import Path

        from pynqmetadata.frontends import Metadata
        from pynqmetadata.views.runtime import RuntimeMetadataParser

        parser = RuntimeMetadataParser(Metadata(input=Path(bitfile_name).with_suffix(".hwh")))
        parser.refresh_hierarchy_dict()
        parser.bin_data = parser.xclbin_data = parser.dtbo_data = None
        return parser

    def _block(self, address: int) -> tuple[RegisterFile, int]:
        for ip in (self.ip_dict or {}).values():
            base, size = ip["phys_addr"], ip["addr_range"]
            if base <= address < base + size:
                if base not in self.blocks:
                    self.blocks[base] = RegisterFile(self.core)
                return self.blocks[base], address - base
        raise RuntimeError(f"no IP at 0x{address:x} in the loaded design")

    def read_registers(self, address, length):
        out = bytearray()
        for a in range(address, address + length, 4):
            regs, off = self._block(a)
            out += int(regs.read(off)).to_bytes(4, "little")
        return bytes(out)

    def write_registers(self, address, data):
        for i in range(0, len(data), 4):
            regs, off = self._block(address + i)
            regs.write(off, int.from_bytes(data[i:i + 4], "little"))

    def flush(self, bo, offset, ptr, size):
        self.flushes += 1

    def invalidate(self, bo, offset, ptr, size):
        self.invalidates += 1
