"""The FPGA backend: quantized conv/gemm layers on the hal_int8 accelerator.

Devices (one backend, one driver, a transport each): ``fpga@emu`` (register and memory
model, always there, simulated), ``fpga@opencl`` (an FPGA OpenCL platform; on a CPU OpenCL
runtime a simulated stand-in), ``fpga@pynq`` (a PYNQ board). A plain ``fpga`` is only ever a
real one. The backend runs the layers of QDQ.md's int8 form (``precision="int8"``); every other
node goes to the CPU fallback, and the integers match ``spec`` bit for bit on every transport.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from hal.backend import Backend, Claim, CompileOptions, Device, Executable
from hal.device import DeviceInfo
from hal.errors import BackendError

from .transports import TRANSPORTS

GENERIC_REASON = ("not part of a quantized Conv/Gemm/MatMul layer (QDQ form: compile with "
                  "precision='int8'); hal_int8 runs only those, with Relu/Clip and a k×k stride-k "
                  "max-pool fused")
#: transports whose devices take far longer per call than the hardware they simulate
SLOW_SIMULATIONS = {"rtl": "cycle-accurate RTL simulation: about 0.4 s per LeNet image (the "
                           "whole zoo at batch 64 takes about an hour)"}


class FpgaBackend(Backend):
    name = "fpga"
    kinds = ("fpga",)
    priority = 10
    variants = tuple(TRANSPORTS)
    precisions = ("int8",)
    default_precision = "int8"
    ops = frozenset({"Conv", "Gemm", "MatMul", "QuantizeLinear", "DequantizeLinear", "Relu",
                     "Clip", "MaxPool"})
    #: target: a manifest target (board or OpenCL platform) instead of the default one;
    #: bitfile: (fpga@pynq) a .bit to program instead of the target's, or the .hwh of a design
    #: that is already programmed
    options = frozenset({"target", "bitfile"})
    #: one accelerator per device, programmed through its registers a layer at a time: two
    #: calls at once would overwrite each other's arguments (HAL takes turns for them)
    thread_safe = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[str, object] = {}  # device string -> what opens its transport
        self._open: dict[str, tuple] = {}  # device string -> (transport, engine text)

    # -- devices --------------------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        from .transports import Found, module

        out = []
        for variant in TRANSPORTS:
            try:
                found = module(variant).discover()
            except Exception as exc:  # noqa: BLE001 - one transport must not hide the others
                found = [Found(usable=False, reason=f"the {variant} transport failed to list its "
                                                    f"devices: {type(exc).__name__}: {exc}")]
            for f in found:
                info = DeviceInfo(kind="fpga", index=f.index, backend=variant, name=f.name,
                                  usable=f.usable, reason=f.reason, simulated=f.simulated,
                                  host_memory=False, details=dict(f.details),
                                  slow_simulation=SLOW_SIMULATIONS.get(variant, ""))
                if f.usable:
                    self._handles[info.string] = f.handle
                out.append(info)
        return out

    def transport(self, device: Device, target: str | None = None, bitfile: str | None = None):
        """(transport, engine text) of ``device``, programmed / built on first use; asking for
        another target or bitfile reopens it (a device holds one design at a time)."""
        key, config = device.string, (target, bitfile)
        if bitfile is not None and device.info.backend != "pynq":
            raise BackendError(f"{device.string}: the bitfile option is for fpga@pynq")
        with self._lock:
            opened = self._open.get(key)
            if opened is None or (config != (None, None) and opened[2] != config):
                opened = (*self._open_transport(device, target, bitfile), config)
                self._open[key] = opened
            return opened[0], opened[1]

    def _open_transport(self, device: Device, target: str | None, bitfile: str | None):
        from . import manifest
        from .transports import module

        t = module(device.info.backend).connect(self._handles.get(device.string), bitfile=bitfile)
        acc = _accelerator()
        t.load(acc, manifest.load(acc / "manifest.json"), target)
        return t, t.describe()

    # -- capability and compilation -------------------------------------------------------
    def claim(self, graph, device: DeviceInfo) -> list[Claim]:
        """One group per accelerator layer (its input DQs, the op, activation, Q and pool
        chain) and per view beside a layer ``device`` runs; every other node refused with why."""
        from . import qdq

        found = qdq.analyse(graph)
        steps = [Claim(step.nodes, _refuses(step, found, device)) for step in found.steps]
        rest = [Claim([n], found.refused.get(id(n)) or f"{n.op_type} is {GENERIC_REASON}")
                for n in graph if id(n) not in found.owner]
        return steps + rest

    def supports(self, node, device: DeviceInfo) -> bool | str:
        """One node alone: a Conv/Gemm/MatMul as the layer around it; any other node runs here
        only inside a layer or a view, which ``claim`` finds over the whole graph."""
        from hal.ir.schemas import is_onnx

        from . import qdq

        if not is_onnx(node, *qdq.OPS):
            return (f"{node.op_type} {node.name!r} runs on {self.name} only inside an "
                    f"accelerator layer or a view between layers (ask claim() with the graph)")
        try:
            return _core_refuses(qdq.match(node), device) or True
        except qdq.Refused as exc:
            return str(exc)

    def flow(self, options: CompileOptions):
        from hal.passes import Flow, ShapeInference, cleanup_passes

        from .passes import FindLayers

        return Flow("fpga.int8", cleanup_passes() + [ShapeInference(strict_mode=False),
                                                     FindLayers()])

    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        from hal.passes import ShapeInference

        from . import manifest, qdq
        from .executable import FpgaExecutable

        model = ShapeInference(strict_mode=False)(model).model  # a segment has bare values
        found = qdq.analyse(model.graph)
        stray = [f"{n.op_type} {n.name!r}" for n in model.graph if id(n) not in found.owner]
        if stray:
            why = "; ".join(dict.fromkeys(found.refused.values()))
            raise BackendError(f"{device.string} got nodes that are not accelerator layers: "
                               f"{stray}" + (f" ({why})" if why else ""))
        transport, engine = self.transport(device, options.extra.get("target"),
                                           options.extra.get("bitfile"))
        inputs = [v.name for v in model.graph.inputs]
        outputs = [v.name for v in model.graph.outputs]
        return FpgaExecutable(device, transport, found.steps, inputs, outputs,
                              manifest.load(_accelerator() / "manifest.json"), engine)

    def put(self, array: np.ndarray, device: Device):
        from .executable import put

        return put(device, self.transport(device)[0], np.ascontiguousarray(array))


def _refuses(step, found, device: DeviceInfo) -> str | None:
    """Why ``device`` does not run a layer or view of ``found``, or None."""
    if step.op != "view":
        return _core_refuses(step, device)
    # a view is worth it only beside a layer this device runs
    beside = [s for s in found.layers if s.y == step.x or s.x == step.y]
    if all(_core_refuses(s, device) for s in beside):
        return (f"Flatten {step.names['op']!r}: a reshape between int8 layers, kept on the "
                f"accelerator only beside a layer {device.string} runs")
    return None


def _core_refuses(layer, device: DeviceInfo) -> str | None:
    """Why the core ``device`` simulates refuses ``layer`` beyond the specification's limits
    (the cores of ``fpga:N@rtl`` are built smaller), or None."""
    if device.backend != "rtl":
        return None
    from .transports import rtl

    why = rtl.core_limit(_rtl_params(device.details.get("target")), *layer.sizes())
    return f"{device.string} cannot run {layer.describe()}: {why}" if why else None


@functools.cache
def _rtl_params(target: str | None) -> dict:
    from .transports import rtl

    return rtl.device_params(target)


def _accelerator():
    from .files import accelerator_dir

    return accelerator_dir()
