"""The small vocabulary every backend speaks: Backend, Device, Buffer, Executable.

Built-in backends and plugins implement exactly the same interface.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import numpy as np

from hal.ir.schemas import HAL_DOMAIN
from hal.device import DeviceInfo
from hal.errors import BackendError, InputError, OptionError

if TYPE_CHECKING:
    import onnx_ir as ir

    from hal.passes import Flow
    from hal.trainer import Launch, Parallel, Trainer, TrainGraph, TrainSpec


@dataclass
class Transfers:
    """Host<->device copies: how many and how many bytes, each way."""

    h2d_count: int = 0
    h2d_bytes: int = 0
    d2h_count: int = 0
    d2h_bytes: int = 0

    @property
    def count(self) -> int:
        return self.h2d_count + self.d2h_count

    @property
    def bytes(self) -> int:
        return self.h2d_bytes + self.d2h_bytes

    def copy(self) -> Transfers:
        return Transfers(self.h2d_count, self.h2d_bytes, self.d2h_count, self.d2h_bytes)

    def __sub__(self, other: Transfers) -> Transfers:
        return Transfers(self.h2d_count - other.h2d_count, self.h2d_bytes - other.h2d_bytes,
                         self.d2h_count - other.d2h_count, self.d2h_bytes - other.d2h_bytes)

    def __add__(self, other: Transfers) -> Transfers:
        return Transfers(self.h2d_count + other.h2d_count, self.h2d_bytes + other.h2d_bytes,
                         self.d2h_count + other.d2h_count, self.d2h_bytes + other.d2h_bytes)

    def to_dict(self) -> dict:
        return {"count": self.count, "bytes": self.bytes,
                "h2d_count": self.h2d_count, "h2d_bytes": self.h2d_bytes,
                "d2h_count": self.d2h_count, "d2h_bytes": self.d2h_bytes}


@dataclass(frozen=True)
class Estimate:
    """One target's time for a call computed from cycles and its clock: never a measurement."""

    target: str
    clock_mhz: float
    ms_per_call: float
    frames_per_s: float


@dataclass
class AcceleratorStats:
    """What an accelerator segment reports about its last call besides its outputs.

    ``layer_cycles``: its cycle counter per accelerator start; ``counter``: where the cycles
    were read ("the simulated accelerator's cycles register"); ``estimates``: each target's
    time for the call (cycles x clock), made as ``basis`` says (or why there are none).
    """

    batch: int
    layer_cycles: list[int]
    counter: str
    estimates: list[Estimate] = field(default_factory=list)
    basis: str = ""

    @property
    def cycles(self) -> int:
        return sum(self.layer_cycles)

    def estimate_text(self) -> str:
        """The estimates led by how they were made, or why there are none."""
        est = "; ".join(f"{e.target} @ {e.clock_mhz:g} MHz: {e.ms_per_call:.3f} ms/call, "
                        f"{e.frames_per_s:,.0f} frames/s" for e in self.estimates)
        return f"{self.basis}: {est}" if est else self.basis

    def summary(self) -> str:
        """The cycles and estimates in one line (``hal compare`` prints it per segment)."""
        return "; ".join(filter(None, [f"{self.cycles:,} cycles for batch {self.batch}, from "
                                       f"{self.counter}", self.estimate_text()]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AcceleratorStats:
        return cls(d["batch"], list(d["layer_cycles"]), d["counter"],
                   [Estimate(**e) for e in d.get("estimates", [])], d.get("basis", ""))


@dataclass
class CompileOptions:
    """Options of ``hal.compile``; ``extra`` holds backend-specific ones."""

    precision: str = "fp32"
    opt_level: int = 1
    fallback: str | None = "cpu"
    #: int8 only: arrays of the inputs (static scales, hal.passes.quantize), or "dynamic"
    #: (int8 weights, activations quantized at run time: hal.passes.dynamic_quantize)
    calibration: Any = None
    #: int8 only (hal.passes.quantize): "minmax" or "percentile" (of |x|, ``calibration_percentile``)
    calibration_method: str = "minmax"
    calibration_percentile: float = 99.99
    #: int8 only: round every scale up to a power of two (shift-only hardware)
    power_of_two: bool = False
    #: compile and run in a worker process, so a crash in the backend is a BackendError
    #: (``hal.isolation``); None: ``HAL_ISOLATE`` decides. A backend sees False: it runs in
    #: the process it was given, the worker when isolated.
    isolate: bool | None = None
    extra: dict = field(default_factory=dict)

    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "bf16", "int8")
    #: the options that only mean something with ``precision="int8"``
    INT8_OPTIONS: ClassVar[tuple[str, ...]] = ("calibration", "calibration_method",
                                               "calibration_percentile", "power_of_two")


class Device:
    """A resolved, usable device: the backend serving it plus its DeviceInfo."""

    def __init__(self, backend: Backend, info: DeviceInfo):
        self.backend = backend
        self.info = info
        self.transfers = Transfers()
        #: held around each compile, put and call when the device is not thread-safe
        self.serial = None if info.thread_safe else threading.RLock()

    @property
    def string(self) -> str:
        return self.info.string

    @property
    def simulated(self) -> bool:
        return self.info.simulated

    def put(self, array: Any) -> Buffer:
        """Copy a host array onto this device (counted unless the device is host memory)."""
        if isinstance(array, Buffer):
            return array.to(self)
        arr = array if type(array) is np.ndarray else np.asarray(array)
        if self.serial is None:
            buf = self.backend.put(arr, self)
        else:
            with self.serial:
                buf = self.backend.put(arr, self)
        if not self.info.host_memory:
            self.transfers.h2d_count += 1
            self.transfers.h2d_bytes += arr.nbytes
        return buf

    def sync(self) -> None:
        """Wait for all work queued on this device (used when timing)."""
        self.backend.sync(self)

    def __repr__(self) -> str:
        sim = ", simulated" if self.simulated else ""
        return f"<hal.Device {self.string}{sim}>"

    def __str__(self) -> str:
        return self.string


class Serial:
    """The locks of the devices among ``devices`` that are not thread-safe, held together
    (taken in one order, so two threads holding some of the same never wait on each other)."""

    def __init__(self, devices: Sequence[Device]):
        self.locks = [d.serial for d in sorted(devices, key=lambda d: d.string)
                      if d.serial is not None]

    def __bool__(self) -> bool:
        return bool(self.locks)

    def __enter__(self) -> None:
        for lock in self.locks:
            lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        for lock in reversed(self.locks):
            lock.release()


class Buffer:
    """An array that lives on a device.

    Subclasses implement ``_to_host``; they pass ``shape`` and ``dtype`` to
    ``__init__`` or override the properties. Kept free of ABC machinery because
    buffers are created on every call.
    """

    def __init__(self, device: Device, shape: tuple[int, ...] | None = None,
                 dtype: Any = None):
        self.device = device
        self._shape = tuple(shape) if shape is not None else None
        self._dtype = np.dtype(dtype) if dtype is not None else None

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def _to_host(self) -> np.ndarray:
        """Copy the contents to a host numpy array (the backend's own copy)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _to_host()")

    def numpy(self) -> np.ndarray:
        arr = self._to_host()
        if not self.device.info.host_memory:
            self.device.transfers.d2h_count += 1
            self.device.transfers.d2h_bytes += arr.nbytes
        return arr

    def to(self, device: Device) -> Buffer:
        """This buffer on ``device``: itself if already there, else a copy through the host."""
        if device is self.device:
            return self
        return device.put(self.numpy())

    def __repr__(self) -> str:
        return f"<hal.Buffer {self.shape} {self.dtype} on {self.device.string}>"


class HostBuffer(Buffer):
    """A buffer in host memory, holding a numpy array."""

    __slots__ = ("device", "array")

    def __init__(self, array: np.ndarray, device: Device):
        self.device = device
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def _to_host(self) -> np.ndarray:
        return self.array

    def numpy(self) -> np.ndarray:
        return self.array


class Executable(abc.ABC):
    """A compiled segment on one device."""

    def __init__(self, device: Device, input_names: Sequence[str], output_names: Sequence[str]):
        self.device = device
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.info: dict[str, Any] = {}  # shown by --explain (native steps, cache hits, ...)
        #: an accelerator's own figures for the last call (cycles, estimates), or None
        self.stats: AcceleratorStats | None = None

    @abc.abstractmethod
    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        """Run on device-resident buffers; results stay on the device."""

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        if len(arrays) != len(self.input_names):
            raise InputError(f"expected {len(self.input_names)} inputs {self.input_names}, "
                             f"got {len(arrays)}")
        outs = self.run([self.device.put(a) for a in arrays])
        return [b.numpy() for b in outs]


@dataclass
class Claim:
    """Nodes of a graph that a backend places as one unit, or refuses.

    ``reason`` is None when the backend runs ``nodes`` (they stay together in one segment),
    else why it cannot (they go to the fallback device with that reason).
    """

    nodes: list[ir.Node]
    reason: str | None = None


class Backend(abc.ABC):
    """A way of running IR graphs on some kinds of device.

    Subclasses set the class attributes and implement ``probe`` and ``compile``.
    Capability is ``claim(graph, device)``: the groups of nodes the backend runs, each placed
    as one unit, and the nodes it refuses with the reason (ONNX Runtime's GetCapability). By
    default it is ``supports(node, device)`` asked node by node, one node per group; an
    accelerator whose unit spans several nodes (a fused layer) overrides ``claim``.
    A backend module must not import its framework at import time: do it in
    ``probe``/``compile`` so that listing devices stays cheap and a missing
    framework is reported, not raised.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    priority: ClassVar[int] = 0
    #: ONNX op types (default domain) this backend runs; what ``supports`` answers.
    ops: ClassVar[frozenset[str]] = frozenset()
    #: HAL's own fused ops (domain "ai.hal", e.g. FusedConv) this backend runs.
    hal_ops: ClassVar[frozenset[str]] = frozenset()
    #: Python modules the backend needs; a missing one makes it unusable with ``install_hint``.
    requires: ClassVar[tuple[str, ...]] = ()
    install_hint: ClassVar[str] = ""
    #: Backend-specific compile options accepted in ``hal.compile(..., **options)``.
    options: ClassVar[frozenset[str]] = frozenset()
    #: Precisions this backend can compile for.
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: Names other than ``name`` that this backend's devices may carry after "@": the FPGA
    #: backend serves fpga@emu, fpga@opencl and fpga@pynq (one backend, several transports).
    #: A device string naming a variant goes to the backend declaring it, before a backend
    #: that happens to be called the same (the "opencl" backend serves no fpga devices).
    variants: ClassVar[tuple[str, ...]] = ()
    #: The precision used when the caller gives none (an int8-only accelerator sets "int8").
    default_precision: ClassVar[str] = "fp32"
    #: False when calls on one device must not overlap (HAL then runs its compiles, puts
    #: and calls one at a time); its devices say so in ``DeviceInfo.thread_safe``.
    thread_safe: ClassVar[bool] = True
    #: Compile options ``hal serve`` uses on this backend unless the model sets them. A
    #: backend whose worker threads spin between calls turns that off here: in a server the
    #: event loop parsing requests needs those cores between batches (docs/serving.md).
    serving_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    @abc.abstractmethod
    def probe(self) -> list[DeviceInfo]:
        """Every device of this backend, usable or not, each proven by running a tiny op."""

    def supports(self, node: ir.Node, device: DeviceInfo) -> bool | str:
        """True if ``node`` can run on ``device``, else the reason it cannot."""
        if node.domain == HAL_DOMAIN:
            return True if node.op_type in self.hal_ops else \
                f"{self.name} has no kernel for ai.hal {node.op_type}"
        if node.domain not in ("", "ai.onnx"):
            return f"op domain {node.domain!r} is not supported by {self.name}"
        if node.op_type not in self.ops:
            return f"{self.name} has no kernel for {node.op_type}"
        return True

    def claim(self, graph: ir.Graph, device: DeviceInfo) -> list[Claim]:
        """The nodes of ``graph`` this backend runs on ``device``, in groups placed as one unit
        each, and those it refuses with the reason; a node in no claim is refused. Default:
        ``supports`` per node (a node whose ``supports`` raises is refused with the error)."""
        claims = []
        for node in graph:
            try:
                ok = self.supports(node, device)
            except Exception as exc:  # noqa: BLE001 - one node's question must not sink the rest
                ok = f"supports() raised {type(exc).__name__}: {exc}"
            reason = None if ok is True else (ok or f"{self.name} does not support it")
            claims.append(Claim([node], reason))
        return claims

    def flow(self, options: CompileOptions) -> Flow | None:
        """The named pass pipeline run on the IR before ``compile``; None (the default) runs
        the shared one, ``hal.passes.default_flow``."""
        return None

    @abc.abstractmethod
    def compile(self, model: ir.Model, device: Device, options: CompileOptions) -> Executable:
        """Lower one segment (a self-contained ir.Model) to an Executable on ``device``."""

    #: Whether ``compile_training`` works: the backend differentiates HAL's training graph with
    #: its framework's autodiff (see ``hal.trainer``). ``hal.train`` refuses the others.
    trains: ClassVar[bool] = False

    def compile_training(self, graph: TrainGraph, device: Device, spec: TrainSpec) -> Trainer:
        """A ``Trainer`` of ``graph`` on ``device`` (backends with ``trains = True``). With
        ``spec.parallel`` active, the trainer spreads each step over the workers: it is given
        this process's micro-batches (its shard of each global batch when ``parallel.world``
        > 1, the global batch otherwise) with weights that already account for the split."""
        raise BackendError(f"backend {self.name!r} cannot train")

    def launch_training(self, device: Device, parallel: Parallel) -> Launch:
        """How to run ``parallel`` on ``device``'s engine: the processes to start and their
        environment, or ``Launch(here=True)``. A strategy or worker count the backend cannot
        run is an OptionError saying what it can."""
        raise OptionError(f"backend {self.name!r} trains on one device only; "
                          f"strategy={parallel.strategy!r} with workers={parallel.workers} "
                          f"needs a backend that runs it (torch, jax or tf)")

    def put(self, array: np.ndarray, device: Device) -> Buffer:
        """Place a host array on ``device``. Host-memory backends keep the numpy array."""
        return HostBuffer(array, device)

    def sync(self, device: Device) -> None:
        """Block until work queued on ``device`` is done."""

    def missing_requirements(self) -> list[str]:
        import importlib.util

        def missing(module: str) -> bool:
            try:  # a dotted name imports its parent, which raises when the parent is missing
                return importlib.util.find_spec(module) is None
            except ModuleNotFoundError:
                return True

        return [m for m in self.requires if missing(m)]

    def unusable(self, kind: str, reason: str, index: int = 0, **kw: Any) -> DeviceInfo:
        """A DeviceInfo saying this backend's ``kind`` device cannot be used, and why."""
        return DeviceInfo(kind=kind, index=index, backend=self.name, usable=False, reason=reason, **kw)


def check_precision(backend: Backend, precision: str | CompileOptions, where: str = "",
                    hint: str = "") -> None:
    """The one precision check (the compiler's and each backend's): raise OptionError unless
    ``precision`` is one HAL knows and ``backend`` compiles for."""
    if isinstance(precision, CompileOptions):
        precision = precision.precision
    if precision not in CompileOptions.PRECISIONS:
        raise OptionError(f"precision {precision!r} is not one of "
                          f"{list(CompileOptions.PRECISIONS)}")
    if precision not in backend.precisions:
        raise OptionError(f"{where or backend.name} cannot compile for precision {precision!r}; "
                          f"{backend.name} supports {list(backend.precisions)}{hint}")
