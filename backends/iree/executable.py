"""Running IREE modules: one module per input shape (or one with dynamic dims), one VM
context per calling thread.

``shapes="static"`` (the default): each new combination of input shapes gets its own module,
compiled for exactly those shapes (IREE tiles and vectorizes static shapes best) and kept,
in this executable and in the on-disk cache (``compiler``); the executable is built with the
shapes known at compile time, every dynamic dim taken as 1 (a compile error shows at
``hal.compile``, and batch 1 is ready). ``shapes="dynamic"``: one module whose dynamic dims
stay dynamic, for every shape.

A VM context runs one call at a time, so each thread gets its own (the module's bytes and the
device are shared). Results are fresh buffers of each call, read back as numpy arrays that
the caller owns.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
import onnx

from hal.backend import Buffer, Device, Executable, HostBuffer
from hal.backends.iree import compiler
from hal.errors import BackendError


class Runtime:
    """An IREE VM instance, a device on a driver, and its HAL module, shared by the modules
    loaded on it."""

    def __init__(self, driver: str):
        import iree.runtime as rt

        self.rt = rt
        self.driver = driver
        self.config = rt.Config(driver)
        self.instance = self.config.vm_instance
        self.device = self.config.device
        self.hal_module = self.config.default_vm_modules[0]

    def load(self, module: compiler.Module):
        rt = self.rt
        if module.path is not None:
            return rt.VmModule.mmap(self.instance, str(module.path))
        return rt.VmModule.copy_buffer(self.instance, module.vmfb)


class Loaded:
    """One compiled module on a runtime, with a VM context per calling thread."""

    def __init__(self, runtime: Runtime, module: compiler.Module):
        self.runtime = runtime
        self.module = module
        self.vm_module = runtime.load(module)
        self.function = self.vm_module.lookup_function(compiler.FUNCTION)
        if self.function is None:
            raise BackendError(f"the IREE module has no function {compiler.FUNCTION!r} "
                               f"({self.vm_module.function_names})")
        self._local = threading.local()

    def invoker(self):
        inv = getattr(self._local, "invoker", None)
        if inv is None:
            rt, r = self.runtime.rt, self.runtime
            context = rt.VmContext(r.instance, modules=[r.hal_module, self.vm_module])
            inv = self._local.invoker = rt.FunctionInvoker(context, r.device, self.function)
        return inv


class IreeExecutable(Executable):
    """numpy in, numpy out (host memory on cpu), one module per input shape."""

    def __init__(self, device: Device, runtime: Runtime, proto: onnx.ModelProto, kind: str,
                 static: bool, info: dict, flags: tuple[str, ...] = ()):
        super().__init__(device, [v.name for v in proto.graph.input],
                         [v.name for v in proto.graph.output])
        self.runtime = runtime
        self.proto = proto
        self.kind = kind
        self.static = static
        self.info = info
        self.flags = tuple(flags)
        self._dims = [_dims(v) for v in proto.graph.input]
        self._loaded: dict[tuple | None, Loaded] = {}
        self._lock = threading.Lock()
        self._n_out = len(proto.graph.output)
        # IREE's ABI has no unsigned types: uint8 results come back as int8 (same bits)
        self._out_dtypes = [_np_dtype(v) for v in proto.graph.output]
        first = tuple(tuple(d if isinstance(d, int) else 1 for d in dims)
                      for dims in self._dims) if static else None
        self._get(first)  # compile now: errors show at hal.compile, the first shape is ready

    def _get(self, shapes: tuple | None) -> Loaded:
        loaded = self._loaded.get(shapes)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = self._loaded.get(shapes)
            if loaded is None:
                proto = self.proto if shapes is None else specialize(self.proto, shapes)
                t0 = time.perf_counter()
                module = compiler.build(proto, self.kind, self.flags)
                loaded = Loaded(self.runtime, module)
                self._loaded[shapes] = loaded
                self._note(shapes, module, time.perf_counter() - t0)
        return loaded

    def _note(self, shapes, module: compiler.Module, seconds: float) -> None:
        mods = self.info.setdefault("modules", [])
        mods.append({"shapes": "dynamic" if shapes is None else [list(s) for s in shapes],
                     "cache": module.cache, "seconds": round(seconds, 3)})

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        arrays = [b.array if type(b) is HostBuffer else b.numpy() for b in buffers]
        key = tuple(a.shape for a in arrays) if self.static else None
        loaded = self._loaded.get(key) or self._get(key)
        result = loaded.invoker()(*arrays)
        if self._n_out == 1:
            result = (result,)
        device = self.device
        out = []
        for r, want in zip(result, self._out_dtypes):
            a = _host(r)
            if want is not None and a.dtype != want and a.dtype.itemsize == want.itemsize:
                a = a.view(want)
            out.append(HostBuffer(a, device))
        return out


def _host(value) -> np.ndarray:
    """A result as a numpy array the caller owns: the host view of the buffer IREE allocated
    for this call's result (each call gets fresh result buffers, and the view keeps its buffer
    alive), so nothing is copied and nothing later overwrites it."""
    to_host = getattr(value, "to_host", None)
    return to_host() if to_host is not None else np.asarray(value)


def _np_dtype(value: onnx.ValueInfoProto) -> np.dtype | None:
    t = value.type.tensor_type.elem_type
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)) if t else None
    except (KeyError, TypeError, ValueError):
        return None


def _dims(value: onnx.ValueInfoProto) -> list:
    """The value's dims: ints where static, names (or None) where dynamic."""
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in shape.dim]


def specialize(proto: onnx.ModelProto, shapes: tuple) -> onnx.ModelProto:
    """A copy of ``proto`` with its inputs at ``shapes``, every other shape to be inferred."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    for value, shape in zip(g.input, shapes):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise BackendError(f"input {value.name!r} has rank {len(dims)}, got shape "
                               f"{list(shape)}")
        for d, n in zip(dims, shape):
            d.Clear()
            d.dim_value = int(n)
    for value in g.output:
        for d in value.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()  # unknown: inferred from the new input shapes
    del g.value_info[:]
    return out
