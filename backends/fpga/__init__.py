"""The FPGA backend: quantized conv/gemm layers on the hal_int8 accelerator.

Devices (one backend, one driver, a transport each): ``fpga@emu`` (register and memory
model, always there, simulated), ``fpga@opencl`` (an FPGA OpenCL platform; on a CPU OpenCL
runtime a simulated stand-in), ``fpga@pynq`` (a PYNQ board), ``fpga@rtl`` (the Verilog core in
cycle-accurate simulation). A plain ``fpga`` is only ever a
real one. The backend runs the layers of QDQ.md's int8 form (``precision="int8"``); every other
node goes to the CPU fallback, and the integers match ``spec`` bit for bit on every transport.
"""

from __future__ import annotations

import threading

import numpy as np

from hal.backend import Backend, CompileOptions, Device, Executable
from hal.device import DeviceInfo
from hal.errors import BackendError

from .transports import TRANSPORTS

GENERIC_REASON = ("not part of a quantized Conv/Gemm/MatMul layer (QDQ form: compile with "
                  "precision='int8'); hal_int8 runs only those, with Relu/Clip and 2×2-style "
                  "max-pool fused")


class FpgaBackend(Backend):
    name = "fpga"
    kinds = ("fpga",)
    priority = 10
    variants = tuple(TRANSPORTS)
    precisions = ("int8",)
    default_precision = "int8"
    ops = frozenset({"Conv", "Gemm", "MatMul", "QuantizeLinear", "DequantizeLinear", "Relu",
                     "Clip", "MaxPool"})
    options = frozenset({"target"})

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[str, object] = {}  # device string -> what opens its transport
        self._open: dict[str, tuple] = {}  # device string -> (transport, engine text)

    # -- devices --------------------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        return [self._probe_emu(), *self._probe_opencl(), *self._probe_pynq(), self._probe_rtl()]

    def _info(self, variant: str, index: int = 0, **kw) -> DeviceInfo:
        return DeviceInfo(kind="fpga", index=index, backend=variant, host_memory=False, **kw)

    def _probe_emu(self) -> DeviceInfo:
        from .transports.emu import EmuTransport

        try:
            t = EmuTransport()
            _self_test(t)
        except Exception as exc:
            return self._info("emu", usable=False, simulated=True,
                              reason=f"emulator self-test failed: {type(exc).__name__}: {exc}")
        engine = ("simulation library (HLS C++ kernel built for the host)" if t.engine == "simlib"
                  else f"numpy specification ({t.core.engine_note})")
        self._handles["fpga:0@emu"] = EmuTransport
        return self._info("emu", name=f"hal_int8 emulator: {engine}", simulated=True,
                          details={"engine": t.engine})

    def _probe_opencl(self) -> list[DeviceInfo]:
        import importlib.util

        if importlib.util.find_spec("pyopencl") is None:
            return [self._info("opencl", usable=False,
                               reason="pyopencl not installed: pip install hal-accel[opencl]")]
        from hal.backends.opencl import runtime

        from .transports.opencl import OpenCLTransport, is_fpga

        try:
            devs = runtime.devices()
        except Exception as exc:
            return [self._info("opencl", usable=False,
                               reason=f"no OpenCL platform could be listed: {exc}")]
        fpgas = [d for d in devs if is_fpga(d)]
        if fpgas:
            out = []
            for i, d in enumerate(fpgas):
                self._handles[f"fpga:{i}@opencl"] = (OpenCLTransport, d)
                out.append(self._info("opencl", i, name=f"{d.name} ({d.platform.name.strip()})",
                                      details={"platform": d.platform.name.strip()}))
            return out
        cpus = [d for d in devs if d.type_kind == "cpu"]
        if not cpus:
            return [self._info("opencl", usable=False,
                               reason="no FPGA OpenCL platform and no CPU runtime to stand in")]
        d = cpus[0]
        try:
            t = OpenCLTransport(d)
            t.load(_accelerator(), {}, None)
            _self_test(t)
        except Exception as exc:
            return [self._info("opencl", usable=False, simulated=True,
                               reason=f"OpenCL stand-in self-test failed: {type(exc).__name__}: "
                                      f"{str(exc)[:300]}")]
        self._handles["fpga:0@opencl"] = (OpenCLTransport, d)
        return [self._info("opencl", name=f"hal_int8.cl on {d.name} (CPU OpenCL runtime "
                                          f"standing in for an FPGA platform)", simulated=True,
                           details={"platform": d.platform.name.strip()})]

    def _probe_pynq(self) -> list[DeviceInfo]:
        from .transports.pynq import board_devices

        devs, why = board_devices()
        if not devs:
            return [self._info("pynq", usable=False, reason=why)]
        out = []
        for i, d in enumerate(devs):
            sim = bool(getattr(d, "hal_simulated", False))
            self._handles[f"fpga:{i}@pynq"] = d
            out.append(self._info("pynq", i, name=str(getattr(d, "name", d.tag)), simulated=sim,
                                  details={"tag": d.tag}))
        return out

    def _probe_rtl(self) -> DeviceInfo:
        from .simlib import compiler
        from .transports.rtl import RtlTransport, find_verilator

        try:
            find_verilator()
            compiler()
        except BackendError as exc:
            return self._info("rtl", usable=False, simulated=True, reason=str(exc))
        self._handles["fpga:0@rtl"] = RtlTransport
        return self._info("rtl", name="hal_int8 Verilog RTL, Verilated (cycle-accurate; built on "
                                      "first use)", simulated=True)

    def transport(self, device: Device, target: str | None = None):
        """The opened transport of ``device`` (programmed / built on first use)."""
        key = device.string
        with self._lock:
            if key not in self._open:
                from . import targets

                handle = self._handles.get(key)
                variant = device.info.backend
                if variant == "emu":
                    t = handle()
                    engine = ("simulation library" if t.engine == "simlib"
                              else "numpy specification")
                elif variant == "opencl":
                    cls, cl_device = handle
                    t = cls(cl_device)
                    engine = "OpenCL kernel"
                elif variant == "pynq":
                    from .transports.pynq import PynqTransport

                    t = PynqTransport(handle)
                    engine = "board" if not t.simulated else "pynq stand-in device"
                elif variant == "rtl":
                    t = handle()
                    engine = "Verilated RTL, cycle-accurate"
                else:
                    raise BackendError(f"{key}: no transport named {variant!r}")
                acc = _accelerator()
                t.load(acc, targets.manifest(acc), target)
                if variant == "opencl":
                    engine = f"OpenCL kernel {t.program_source}"
                self._open[key] = (t, engine)
            return self._open[key]

    # -- capability and compilation -------------------------------------------------------
    def supports(self, node, device: DeviceInfo) -> bool | str:
        from . import qdq

        graph = node.graph
        if graph is None:
            return f"{node.op_type}: {GENERIC_REASON}"
        found = qdq.analysis(graph)
        if id(node) in found.owner:
            return True
        return found.refused.get(id(node)) or f"{node.op_type} is {GENERIC_REASON}"

    def flow(self, options: CompileOptions):
        from hal.passes import Flow, ShapeInference, cleanup_passes

        from .passes import GroupLayers

        return Flow("fpga.int8", cleanup_passes() + [ShapeInference(strict_mode=False),
                                                     GroupLayers()])

    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        from hal.passes import ShapeInference

        from . import qdq, targets
        from .executable import FpgaExecutable

        model = ShapeInference(strict_mode=False)(model).model  # a segment has bare values
        found = qdq.analyse(model.graph)
        stray = [f"{n.op_type} {n.name!r}" for n in model.graph if id(n) not in found.owner]
        if stray:
            why = "; ".join(dict.fromkeys(found.refused.values()))
            raise BackendError(f"{device.string} got nodes that are not accelerator layers: "
                               f"{stray}" + (f" ({why})" if why else ""))
        transport, engine = self.transport(device, options.extra.get("target"))
        inputs = [v.name for v in model.graph.inputs]
        outputs = [v.name for v in model.graph.outputs]
        return FpgaExecutable(device, transport, found.layers, inputs, outputs,
                              targets.manifest(_accelerator()), engine)

    def put(self, array: np.ndarray, device: Device):
        from .executable import put

        return put(device, self.transport(device)[0], np.ascontiguousarray(array))


def _accelerator():
    from .files import accelerator_dir

    return accelerator_dir()


def _self_test(transport) -> None:
    """One small gemm through the driver, checked against the specification."""
    from . import qdq, spec
    from .driver import Driver

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
