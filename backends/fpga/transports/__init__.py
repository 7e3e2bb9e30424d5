"""The ways of reaching hal_int8: each a ``Transport`` (see ``..transport``).

``emu``     register and memory model; ``ap_start`` runs the simulation library (or the spec)
``opencl``  pyopencl: the ``hal_int8_layer`` kernel, registers become its arguments
``pynq``    a board through pynq: ``Overlay``, ``allocate``, MMIO
``rtl``     the Verilog core, Verilated, with an AXI memory model: cycle-accurate simulation
"""

from __future__ import annotations

import importlib

#: device variant -> "module:Class" (relative to this package); ``fpga@<variant>``
TRANSPORTS = {"emu": "emu:EmuTransport", "opencl": "opencl:OpenCLTransport",
              "pynq": "pynq:PynqTransport", "rtl": "rtl:RtlTransport"}


def transport_class(name: str):
    module, cls = TRANSPORTS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
