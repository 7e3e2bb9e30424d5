"""``cpu@iree`` (and ``cuda@iree`` / ``vulkan@iree`` where present): the IREE compiler and
runtime, as a HAL device like any other.

A segment (after HAL's shared, pure-ONNX flow) is imported with IREE's own ONNX importer
(``iree.compiler.extras.onnx_importer``, what ``iree-import-onnx`` runs), compiled by
``iree-compile`` for ``llvm-cpu`` with the host CPU's features
(``--iree-llvmcpu-target-cpu=host``), and run by ``iree.runtime`` on the ``local-task`` driver
(its thread pool; limited to the CPUs this process may use when that is fewer than the
machine has). Compiled modules (.vmfb) are cached on disk, per input shape:
``$HAL_CACHE_DIR/iree`` (default ``~/.cache/hal/iree``), keyed by the SHA-256 of the model, its
shapes, the compiler version, the flags and the host CPU (``compiler``).

Shapes (backend option ``shapes``): ``"static"`` (default) compiles one module per
combination of input shapes, the first at ``hal.compile`` (dynamic dims taken as 1), each new
batch size on its first call (seconds, once; then from the cache); ``"dynamic"`` compiles one
module with the dynamic dims left dynamic (any batch, no recompile, slower kernels).
``Executable.info["modules"]`` lists each module built, with its shapes and whether it came
from the cache.

Backend option ``channels_last`` (default False): rewrite convolutions to NHWC before IREE's
flow (``iree-preprocessing-convert-conv-to-channels-last``). Measured on the reference machine at
batch 64: resnet_lite 77 -> 24-38 ms, mobilenet_lite 80 -> 28 ms, but lenet 42 -> 140 ms (its
one-channel input), so it is left to the caller (or to measured selection).

Precision: fp32. HAL's fused ``ai.hal`` FusedConv/FusedGemm are expanded back into standard
Conv/Gemm + activation first (as for ONNX Runtime). ``cuda@iree`` and ``vulkan@iree`` are usable
only when the runtime's driver finds a device there and a tiny model compiled for it runs.
"""

from __future__ import annotations

import threading
from typing import Any

from hal.backend import Backend, CompileOptions, Device, Executable, check_precision
from hal.backends.iree.ops import OPS, refusal
from hal.backends.common.unfuse import RunsOnnxFiles
from hal.device import DeviceInfo
from hal.errors import BackendError, OptionError

_SHAPES = ("static", "dynamic")


class IreeBackend(RunsOnnxFiles, Backend):
    name = "iree"
    kinds = ("cpu", "cuda", "vulkan")
    priority = 20  # below ONNX Runtime (60), torch, jax and tf: compiles take seconds
    requires = ("iree.compiler", "iree.runtime")
    install_hint = "pip install hal-accel[iree]"
    options = frozenset({"shapes", "channels_last"})
    precisions = ("fp32",)
    ops = frozenset(OPS)
    refusal = staticmethod(refusal)  # ops.refusal: the standard ops declined, and why

    def __init__(self) -> None:
        self._runtimes: dict[str, Any] = {}
        self._lock = threading.Lock()

    def runtime(self, kind: str):
        """The shared runtime (VM instance, device) of ``kind``, created on first use."""
        from hal.backends.iree.compiler import TARGETS
        from hal.backends.iree.executable import Runtime

        with self._lock:
            rt = self._runtimes.get(kind)
            if rt is None:
                driver = TARGETS[kind][1]
                if kind == "cpu":
                    _limit_threads()
                rt = self._runtimes[kind] = Runtime(driver)
                _release_at_exit(self)
            return rt

    # -- devices -------------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        import iree.runtime as rt

        from hal.backends.iree.compiler import TARGETS, compiler_version

        version = compiler_version().split("rc")[0]
        out = []
        for kind in self.kinds:
            target, driver, _ = TARGETS[kind]
            host = kind == "cpu"
            try:
                found = rt.get_driver(driver).query_available_devices()
            except Exception as exc:  # noqa: BLE001 - the driver's library is missing
                out.append(self.unusable(kind, f"IREE {version} driver {driver!r}: "
                                               f"{_driver_error(exc)}", host_memory=host))
                continue
            if not found:
                out.append(self.unusable(kind, f"IREE {version} driver {driver!r} finds no "
                                               f"device", host_memory=host))
                continue
            try:
                _self_test(self, kind)
            except Exception as exc:  # noqa: BLE001 - compiler or runtime failed
                out.append(self.unusable(kind, f"IREE {version} {target} on {driver!r} failed "
                                               f"a tiny model: {type(exc).__name__}: {exc}",
                                         host_memory=host))
                continue
            name = found[0].get("name") or driver
            out.append(DeviceInfo(kind, 0, self.name,
                                  name=f"IREE {version} {target} on {driver} ({name})",
                                  host_memory=host,
                                  details={"driver": driver, "target": target}))
        return out

    # -- compiling -----------------------------------------------------------------
    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        import onnx_ir as ir

        from hal.backends.iree.compiler import CHANNELS_LAST, compiler_version, flags
        from hal.backends.iree.executable import IreeExecutable
        from hal.backends.common.unfuse import expand_hal_ops

        check_precision(self, options, device.string)
        shapes = options.extra.get("shapes", "static")
        if shapes not in _SHAPES:
            raise OptionError(f"shapes must be one of {list(_SHAPES)}, got {shapes!r}")
        channels_last = options.extra.get("channels_last", False)
        if not isinstance(channels_last, bool):
            raise OptionError(f"channels_last must be True or False, got {channels_last!r}")
        extra = (CHANNELS_LAST,) if channels_last else ()
        kind = device.info.kind
        expanded = expand_hal_ops(model)
        proto = ir.to_proto(model)
        info: dict[str, Any] = {"compiler": f"iree {compiler_version()}",
                                "flags": " ".join(flags(kind, extra)),
                                "driver": device.info.details.get("driver", ""),
                                "shapes": shapes}
        if expanded:
            info["expanded_hal_ops"] = expanded
        return IreeExecutable(device, self.runtime(kind), proto, kind, shapes == "static", info,
                              extra)


_HOLDERS: list = []


def _release_at_exit(backend: IreeBackend) -> None:
    """Drop the runtimes (VM instance, devices) before the interpreter shuts down: IREE's
    nanobind extension otherwise reports them as leaked on stderr when it is torn down first."""
    import atexit
    import weakref

    if not _HOLDERS:
        atexit.register(_release)
    _HOLDERS.append(weakref.ref(backend))


def _release() -> None:
    import gc

    for ref in _HOLDERS:
        backend = ref()
        if backend is not None:
            backend._runtimes.clear()
    gc.collect()


def _driver_error(exc: Exception) -> str:
    """The runtime's reason without its source locations and search-path listing."""
    import re

    text = str(exc).split("Tried:")[0].replace("Error creating driver:", "")
    text = re.sub(r"\S+\.c:\d+:\s*", "", text)
    return " ".join(text.split()).rstrip(":; ")[:300]


def _limit_threads() -> None:
    """local-task's worker count: the CPUs this process may use, when fewer than the
    machine's (before the first device is created; IREE's flags are process-wide)."""
    from hal.backends.common.unfuse import default_threads

    n = default_threads()
    if n:
        import iree.runtime as rt

        rt.flags.parse_flags(f"--task_topology_max_group_count={n}")


def _self_test(backend: IreeBackend, kind: str) -> None:
    import numpy as np
    import onnx_ir as ir
    from onnx import TensorProto, helper

    from hal.backends.iree.executable import IreeExecutable

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    exe = IreeExecutable(None, backend.runtime(kind), ir.to_proto(ir.from_proto(m)), kind,
                         True, {})
    x = np.array([-1, 2], np.float32)
    y = exe.run([_Host(x)])[0].array
    if not np.array_equal(y, [0, 2]):
        raise BackendError(f"Relu([-1, 2]) gave {y}")


class _Host:
    """A stand-in HostBuffer for the self-test (no Device exists yet)."""

    def __init__(self, array):
        self.array = array

    def numpy(self):
        return self.array
