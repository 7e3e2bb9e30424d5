"""``cpu@jax``, ``gpu@jax``, ``tpu@jax``: segments lowered to jax.numpy/lax and jax.jit-compiled.

The lowering is the tracing backends' shared one (``hal.backends.common``) with jax's
context and kernel table; training (``compile_training``) is ``trainer.JaxTrainer``, with
optax's optimizers (``optim``), on one device or a device mesh (``parallel``). jax is
imported lazily (probe/compile, ``framework``). Nothing global is changed: 64-bit types are
enabled per computation, only for segments that need them, with ``jax.enable_x64`` around
their trace and calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.backend import CompileOptions, Device, check_precision
from hal.backends.common.backend import TracingBackend
from hal.backends.common.frameworks import quiet_stderr
from hal.backends.jax_backend.framework import import_jax
from hal.backends.jax_backend.kernels import TABLE
from hal.device import DeviceInfo
from hal.errors import OptionError

_MISSING = {
    "gpu": "jax installed, no GPU found (for NVIDIA GPUs: pip install 'jax[cuda12]')",
    "tpu": "jax installed, no TPU found",
    "cpu": "jax installed, no CPU device found",
}


_JAX_DTYPES = frozenset({"FLOAT", "DOUBLE", "FLOAT16", "BFLOAT16", "BOOL", "INT8", "INT16",
                         "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})


class JaxBackend(TracingBackend):
    name = "jax"
    priority = 40
    requires = ("jax",)
    install_hint = "pip install hal-accel[jax]"
    table = TABLE

    def __init__(self) -> None:
        self._jax_devices: dict[tuple[str, int], Any] = {}

    # -- devices -----------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        jax = import_jax()
        found: list[DeviceInfo] = []
        for kind in self.kinds:
            try:
                with quiet_stderr(replay_on_error=False):  # jax logs each platform it lacks
                    devs = jax.devices(kind)
            except RuntimeError:
                devs = []
            if not devs:
                found.append(self.unusable(kind, _MISSING[kind], host_memory=kind == "cpu"))
                continue
            for i, d in enumerate(devs):
                ok, reason = _self_test(jax, d)
                if ok:
                    self._jax_devices[kind, i] = d
                found.append(DeviceInfo(kind, i, self.name,
                                        name=f"{d.device_kind} (jax {jax.__version__})",
                                        usable=ok, reason=reason, host_memory=kind == "cpu",
                                        details={"platform": d.platform, "id": d.id}))
        return found

    def declines(self, node) -> str | None:
        import onnx_ir as ir

        for v in list(node.inputs) + list(node.outputs):
            if v is not None and v.type is not None and not isinstance(v.type, ir.TensorType):
                return f"jax runs tensors only, not {v.type} ({node.op_type} {v.name!r})"
            if v is not None and v.dtype is not None and v.dtype.name not in _JAX_DTYPES:
                return f"jax has no {v.dtype.name} arrays ({node.op_type} {v.name!r})"
        return None

    def jax_device(self, device: Device):
        return self._jax_devices[device.info.kind, device.info.index]

    # -- compile -----------------------------------------------------------------
    def compile(self, model, device: Device, options: CompileOptions):
        jax = import_jax()
        import jax.numpy as jnp

        from hal.backends.common.lowering import lower
        from hal.backends.jax_backend.context import JaxContext
        from hal.backends.jax_backend.executable import JaxExecutable

        kind = device.info.kind
        check_precision(self, options, device.string)
        if options.precision == "fp16" and kind != "gpu":
            raise OptionError(f"precision 'fp16' is for gpu@jax; on {device.string} use "
                              f"precision='bf16'")
        low = {"fp32": None, "bf16": jnp.bfloat16, "fp16": jnp.float16}[options.precision]
        # fp32 means fp32: no TF32 on GPUs, no bf16 passes on TPUs
        prec = jax.lax.Precision.HIGHEST if low is None else jax.lax.Precision.DEFAULT
        plan = lower(model, TABLE, self.name, params=True)
        return JaxExecutable(device, plan, JaxContext(TABLE, prec, low), self.jax_device(device),
                             jit=options.opt_level >= 1)

    # -- training ----------------------------------------------------------------
    trains = True

    def compile_training(self, graph, device: Device, spec):
        import_jax()
        import jax.numpy as jnp

        from hal.backends.jax_backend.trainer import JaxTrainer
        from hal.trainer import TrainSpec

        if spec.extra:
            raise OptionError(f"the jax trainer takes no backend options; got "
                              f"{sorted(spec.extra)}")
        if spec.precision not in TrainSpec.PRECISIONS:
            raise OptionError(f"precision {spec.precision!r} is not one of "
                              f"{list(TrainSpec.PRECISIONS)}")
        if spec.precision == "fp16" and device.info.kind != "gpu":
            # XLA on CPU computes fp16 by widening every op to fp32 and rounding back: slower
            # than fp32 and no closer to a GPU's fp16; TPUs compute in bf16
            raise OptionError(f"precision 'fp16' trains on gpu@jax; on {device.string} use "
                              f"precision='bf16' (fp32 master weights, bf16 compute)")
        low = {"fp32": None, "bf16": jnp.bfloat16, "fp16": jnp.float16}[spec.precision]
        return JaxTrainer(device, graph, spec, self.jax_device(device), low)

    def launch_training(self, device: Device, parallel):
        """Data ("data") and tensor ("tensor") parallelism over a device mesh in one process
        (``parallel``): ``here=True`` when jax already sees ``parallel.workers`` devices of
        ``device``'s platform; on a CPU with fewer, one fresh process whose ``XLA_FLAGS`` sets
        XLA's host device count (fixed when jax initializes); on a GPU or TPU with fewer, an
        OptionError. "pipeline" is torch's. Multi-host jax (``jax.distributed.initialize``)
        is not supported: the workers are this process's devices."""
        import_jax()
        from hal.backends.jax_backend.parallel import launch

        return launch(device, parallel)

    # -- buffers -----------------------------------------------------------------
    def put(self, array: np.ndarray, device: Device):
        from hal.backends.jax_backend.executable import JaxBuffer

        dev = self._jax_devices[device.info.kind, device.info.index]
        if device.info.host_memory:  # placed lazily, see JaxBuffer; the copy is ours
            return JaxBuffer(None, device, dev, np.array(array, copy=True))
        jax = import_jax()
        if array.dtype.itemsize == 8 and array.dtype.kind in "iuf":
            with jax.enable_x64(True):  # keep int64/float64 as they are
                return JaxBuffer(jax.device_put(array, dev, may_alias=False), device)
        return JaxBuffer(jax.device_put(array, dev, may_alias=False), device)

    def sync(self, device: Device) -> None:
        last = device.__dict__.get("_jax_last")
        if last is not None:
            for a in last:
                a.block_until_ready()


def _self_test(jax, d) -> tuple[bool, str]:
    try:
        x = jax.device_put(np.arange(4, dtype=np.float32), d)
        y = np.asarray(jax.jit(lambda a: a * 2 + 1)(x))
        if not np.array_equal(y, [1, 3, 5, 7]):
            return False, f"jax self-test on {d} returned {y.tolist()}"
        return True, ""
    except Exception as exc:
        return False, f"jax self-test on {d} failed: {type(exc).__name__}: {exc}"
