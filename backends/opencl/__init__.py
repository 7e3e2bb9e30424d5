"""``opencl``: HAL's own kernels (``kernels/*.cl``) on any OpenCL device.

Devices: ``opencl:N`` is the N-th device over all platforms; ``cpu@opencl``,
``gpu@opencl`` and ``accelerator@opencl`` (with their own indices) address the same
devices by type. Each is proven usable by building and running a tiny kernel.

Notes:
- Programs are built once per (device, options) and cached on disk as binaries in
  ``$HAL_CACHE_DIR/opencl`` (default ``~/.cache/hal/opencl``), keyed by source hash,
  device name and driver version; ``Executable.info["programs"]`` says cold or warm.
- GEMM tiles are autotuned per device on first use (a few seconds, cached on disk);
  ``gemm_tile=(mr, nr, kc[, wg_n, wg_m])`` overrides, ``autotune=False`` uses defaults,
  ``build_options="..."`` adds OpenCL compiler flags.
- Graph rewrites are passes of the flow (``passes.py``: the shared ones, then the fusions
  only these kernels run, as ``ai.hal.opencl`` ops); ``compile`` lowers node by node.
- Buffers stay on the device between ops and calls; a CPU runtime still holds a
  separate ``cl.Buffer``, so host copies are counted as transfers.
- ICD guard: see ``hal.backends.opencl.runtime`` (Debian's system PoCL is hidden
  from processes that may load TensorFlow unless ``OCL_ICD_VENDORS`` is set).
"""

from __future__ import annotations

import threading

import numpy as np

from hal.backend import Backend, CompileOptions, Device, check_precision
from hal.device import DeviceInfo
from hal.ir.schemas import FUSED_OPS

OPS = frozenset({
    "Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Gelu", "Exp", "Log", "Sqrt", "Neg", "Abs",
    "Reciprocal", "Erf",
    "BatchNormalization", "Softmax", "LogSoftmax", "LayerNormalization",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Identity",
})
_FP16_TEST = ("#pragma OPENCL EXTENSION cl_khr_fp16 : enable\n"
              "__kernel void k(__global half *x) { x[0] = x[0] + (half)1.0f; }\n")


class OpenCLBackend(Backend):
    name = "opencl"
    kinds = ("opencl", "cpu", "gpu", "accelerator")
    priority = -1  # a bare "cpu" or "gpu" prefers a framework backend when there is one
    ops = OPS
    hal_ops = FUSED_OPS
    requires = ("pyopencl",)
    install_hint = "pip install hal-accel[opencl]"
    options = frozenset({"gemm_tile", "autotune", "build_options"})
    precisions = ("fp32",)

    def __init__(self) -> None:
        self._fp16_log: dict[int, str | None] = {}
        self._lock = threading.Lock()

    # -- devices --------------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        from hal.backends.opencl import runtime

        try:
            devs = runtime.devices()
        except Exception as exc:
            return [self.unusable("opencl", f"no OpenCL platform could be listed: "
                                            f"{type(exc).__name__}: {exc}")]
        if not devs:
            return [self.unusable("opencl", "pyopencl found no OpenCL platform or device; "
                                            "pip install pyopencl[pocl] gives a CPU one")]
        out = []
        per_type: dict[str, int] = {}
        for d in devs:
            ok, reason = self._self_test(d)
            details = {"global_index": d.index, "platform": d.platform.name.strip(),
                       "driver": d.device.driver_version, "type": d.type_kind,
                       "compute_units": d.device.max_compute_units,
                       "fp64": "cl_khr_fp64" in d.device.extensions,
                       "fp16": "cl_khr_fp16" in d.device.extensions}
            common = dict(backend=self.name, name=d.name, usable=ok, reason=reason,
                          host_memory=False, details=details)
            out.append(DeviceInfo("opencl", d.index, **common))
            idx = per_type.get(d.type_kind, 0)
            per_type[d.type_kind] = idx + 1
            out.append(DeviceInfo(d.type_kind, idx, **{**common, "details": dict(details)},
                                  alias_of=f"opencl:{d.index}@{self.name}"))
        return out

    def _self_test(self, d) -> tuple[bool, str]:
        from hal.backends.opencl import programs, runtime

        try:
            lib = runtime.cl()
            prg = programs.build(d, "probe.cl").program
            a = np.arange(4, dtype=np.float32)
            y = np.empty_like(a)
            ba, by = runtime.upload(d, a), runtime.allocate(d, a.nbytes)
            lib.Kernel(prg, "probe_add")(d.queue, (4,), None, ba, ba, by)
            lib.enqueue_copy(d.queue, y, by, is_blocking=True)
            if not np.array_equal(y, 2 * a):
                return False, f"self-test kernel returned {y.tolist()}, expected {(2 * a).tolist()}"
            return True, ""
        except Exception as exc:
            return False, f"self-test failed: {type(exc).__name__}: {str(exc)[:300]}"

    def cl_device(self, info: DeviceInfo):
        from hal.backends.opencl import runtime

        return runtime.devices()[info.details["global_index"]]

    # -- capability -------------------------------------------------------------------
    def supports(self, node, device: DeviceInfo) -> bool | str:
        from hal.backends.opencl.support import check

        return check(self, node, device)

    def fp16_build_log(self, info: DeviceInfo) -> str | None:
        """None if the device builds an fp16 kernel, else the build log saying why not."""
        from hal.backends.opencl import programs

        i = info.details["global_index"]
        with self._lock:
            if i not in self._fp16_log:
                self._fp16_log[i] = programs.try_build_snippet(self.cl_device(info), _FP16_TEST)
            return self._fp16_log[i]

    # -- compile and run -----------------------------------------------------------------
    def flow(self, options: CompileOptions):
        from hal.backends.opencl.passes import opencl_flow

        return opencl_flow(options)

    def compile(self, model, device: Device, options: CompileOptions):
        from hal.backends.opencl.executor import OpenCLExecutable

        check_precision(self, options)
        return OpenCLExecutable(model, device, self.cl_device(device.info), options)

    def put(self, array: np.ndarray, device: Device):
        from hal.backends.opencl.runtime import OpenCLBuffer, upload

        arr = np.ascontiguousarray(array)
        return OpenCLBuffer(device, upload(self.cl_device(device.info), arr), arr.shape,
                            arr.dtype)

    def sync(self, device: Device) -> None:
        self.cl_device(device.info).queue.finish()
