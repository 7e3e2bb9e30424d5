"""The ways of reaching hal_int8: each a ``Transport`` (see ``..transport``) in a module here.

``emu``     register and memory model; ``ap_start`` runs the simulation library (or the spec)
``opencl``  pyopencl: the ``hal_int8_layer`` kernel, registers become its arguments
``pynq``    a board through pynq: ``Overlay``, ``allocate``, MMIO
``rtl``     the Verilog core, Verilated, with an AXI memory model: cycle-accurate simulation

A transport module serves the devices ``fpga:N@<module>`` with two functions: ``discover()``
lists what it can reach as ``Found`` entries (never raising: an unusable one says why), and
``connect(handle, **options)`` returns the ``Transport`` for one of them. Adding a transport is
one module and one entry in ``TRANSPORTS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

#: the transports, in the order their devices are listed
TRANSPORTS = ("emu", "opencl", "pynq", "rtl")


@dataclass
class Found:
    """One device a transport can reach, or the reason there is none."""

    index: int = 0
    name: str = ""
    usable: bool = True
    reason: str = ""
    simulated: bool = False
    details: dict = field(default_factory=dict)
    handle: object = None  # given back to the module's connect()


def module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def pick_target(manifest: dict, transport: str, wanted: str | None = None) -> str:
    """The manifest target for ``transport`` ("pynq", "opencl"): ``wanted``, else the first."""
    from hal.errors import BackendError

    found = [n for n, t in manifest.get("targets", {}).items() if t.get("transport") == transport]
    if wanted:
        return wanted
    if not found:
        raise BackendError(f"the accelerator manifest lists no {transport} target; use fpga@emu")
    return found[0]


def self_test(transport) -> None:
    """One small gemm through the driver, checked against the specification."""
    from hal.errors import BackendError

    from .. import qdq, spec
    from ..driver import Driver

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 5), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 5), dtype=np.int8)
    b = np.array([100, -7, 3], np.int32)
    m, s = np.full(3, 1 << 30, np.int32), np.full(3, 37, np.int32)
    layer = qdq.Layer(op="gemm", nodes=[], x="x", y="y", w=w, bias=b, m=m, s=s, in_shape=(5,))
    drv = Driver(transport)
    loaded = drv.load(layer)
    xm, ym = drv.upload(x), transport.allocate(6)
    drv.run(loaded, xm, ym, 2, timeout_s=30)
    got = ym.read(np.int8, 6).reshape(2, 3)
    want = spec.gemm(x, w, b, m, s)
    for mem in (xm, ym):
        mem.free()
    loaded.free()
    if not np.array_equal(got, want):
        raise BackendError(f"self-test gemm gave {got.tolist()}, the spec {want.tolist()}")
