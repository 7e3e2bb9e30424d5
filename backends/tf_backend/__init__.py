"""``cpu@tf``, ``gpu@tf``, ``tpu@tf``: segments lowered to tf ops in one ``tf.function``.

Flows (``flow`` names them, ``compile`` follows the same choice):

- ``tf.xla`` (default, ``opt_level`` >= 1): HAL's shared passes, the NHWC layout pass,
  ``tf.function(jit_compile=True)``: XLA fuses the whole segment.
- ``tf.graph`` (``opt_level`` >= 1 with ``xla=False``): the same passes, ``tf.function``
  without XLA (TensorFlow's graph executor with Grappler).
- ``tf.plain`` (``opt_level`` 0): cleanup passes only, ``tf.function`` without XLA.

Backend options: ``xla`` (bool) and ``layout`` ("nhwc" or "nchw") override those defaults.
Precisions: fp32 everywhere; bf16 and fp16 on cpu (TensorFlow and XLA both run them),
gpu and tpu: graph inputs and weights are cast down, convolutions and matmuls run in the
low type, and reductions (softmax, normalization, means, pooling sums) run in fp32.

The lowering is the tracing backends' shared one (``hal.backends.common``) with tf's
context, kernel table and channels-last trace (``layout``). tensorflow is imported lazily,
quietly (``framework``), and GPU memory growth switched on before any GPU is initialized,
so TensorFlow takes memory as it needs it and torch or jax in the same process keep theirs.
On GPUs, TF32 is switched off for TensorFlow so that fp32 segments compute in fp32.

Training (``trains``, ``compile_training``): the training graph on the same lowering and
layout pass, differentiated by ``tf.GradientTape``, updated by Keras's optimizers
(``training``, ``optimizers``); XLA by default on gpu and tpu, not on cpu (see there);
precisions fp32 and bf16 on every kind, fp16 (dynamic loss scaling) on gpu. Data
parallelism (``launch_training``, ``TrainSpec.parallel``): tf.distribute.MirroredStrategy
over GPUs or logical CPU devices (``HAL_TF_CPU_DEVICES``), in one process (``parallel``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hal.backend import CompileOptions, Device, check_precision
from hal.backends.common.backend import TracingBackend
from hal.backends.tf_backend.framework import import_tf
from hal.backends.tf_backend.kernels import TABLE
from hal.device import DeviceInfo
from hal.errors import OptionError

_MISSING = {
    "gpu": "tensorflow installed, no GPU found (tensorflow-cpu has no GPU support; for NVIDIA "
           "GPUs: pip install 'tensorflow[and-cuda]')",
    "tpu": "tensorflow installed, no TPU found",
    "cpu": "tensorflow installed, no CPU device found",
}


def _tpu_present() -> bool:
    """Cheap signs of a TPU; without them the resolver is not asked (it would query GCE)."""
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
                or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0"))


class TfBackend(TracingBackend):
    name = "tf"
    priority = 30
    requires = ("tensorflow",)
    install_hint = "pip install hal-accel[tf]"
    options = frozenset({"xla", "layout"})
    table = TABLE
    dynamic_dims = True
    trains = True

    def __init__(self) -> None:
        self._tf_devices: dict[tuple[str, int], str] = {}
        self.tpu_strategy: Any = None

    # -- devices -----------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        tf = import_tf()
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except (RuntimeError, ValueError):
                pass  # already initialized by someone else: their setting stands
        if gpus:  # fp32 means fp32: TensorFlow would otherwise run fp32 matmuls as TF32
            tf.config.experimental.enable_tensor_float_32_execution(False)
        found: list[DeviceInfo] = []
        tpu_reason = self._connect_tpu(tf) if _tpu_present() else _MISSING["tpu"]
        for kind in self.kinds:
            logical = tf.config.list_logical_devices(kind.upper())
            if kind == "cpu":  # HAL_TF_CPU_DEVICES splits one CPU for MirroredStrategy: one
                logical = logical[:1]  # device to HAL, its replicas the trainer's (parallel)
            if not logical:
                reason = tpu_reason if kind == "tpu" else _MISSING[kind]
                found.append(self.unusable(kind, reason, host_memory=kind == "cpu"))
                continue
            for i, d in enumerate(logical):
                ok, reason = _self_test(tf, d.name)
                if ok:
                    self._tf_devices[kind, i] = d.name
                found.append(DeviceInfo(kind, i, self.name, name=_describe(tf, kind, i, d.name),
                                        usable=ok, reason=reason, host_memory=kind == "cpu",
                                        details={"tf_device": d.name}))
        return found

    def _connect_tpu(self, tf) -> str:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME", "local"))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            self.tpu_strategy = tf.distribute.TPUStrategy(resolver)
            return _MISSING["tpu"]
        except Exception as exc:
            return f"tensorflow could not connect to the TPU: {type(exc).__name__}: {exc}"

    def declines(self, node) -> str | None:
        import onnx_ir as ir

        values = [v for v in list(node.inputs) + list(node.outputs) if v is not None]
        if any(v.dtype == ir.DataType.STRING for v in values):
            return f"tf runs numeric tensors only; {node.op_type} here has string values"
        if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1] is not None \
                and node.outputs[1].name:
            return "tf does not compute MaxPool's Indices output"
        if node.op_type in ("Cast", "CastLike") and any(
                v.dtype is not None and v.dtype.name in _ODD_CASTS for v in values):
            return "tf's float8/int4 casts do not follow ONNX's saturation, NaN and packing rules"
        return None

    def tf_device(self, device: Device) -> str:
        return self._tf_devices[device.info.kind, device.info.index]

    # -- flows and compile ---------------------------------------------------------
    def choices(self, options: CompileOptions) -> tuple[bool, bool]:
        """(xla, nhwc) for these options: XLA and the layout pass from ``opt_level`` 1 on."""
        xla = options.extra.get("xla", options.opt_level >= 1)
        layout = options.extra.get("layout", "nhwc" if options.opt_level >= 1 else "nchw")
        if not isinstance(xla, bool):
            raise OptionError(f"tf option xla must be True or False, got {xla!r}")
        if layout not in ("nhwc", "nchw"):
            raise OptionError(f"tf option layout must be 'nhwc' or 'nchw', got {layout!r}")
        return xla, layout == "nhwc"

    def flow(self, options: CompileOptions):
        from hal.passes import Flow, cleanup_passes, optimize_passes

        xla, _ = self.choices(options)
        passes = cleanup_passes()
        if options.opt_level >= 1:
            passes += optimize_passes(options, fuse_activations=True)
            return Flow("tf.xla" if xla else "tf.graph", passes)
        return Flow("tf.xla" if xla else "tf.plain", passes)

    def launch_training(self, device: Device, parallel):
        """Data parallelism (strategy "data") on tf.distribute.MirroredStrategy, in one
        process: on gpu, ``workers`` GPUs from the device's index on (OptionError naming how
        many TensorFlow sees when there are fewer); on cpu, ``workers`` logical CPU devices,
        which TensorFlow makes only before its runtime starts: ``here=True`` when this
        process has them, else one fresh process with ``HAL_TF_CPU_DEVICES=workers``.
        "pipeline" (torch) and "tensor" (jax) are refused with OptionError, and so is a bad
        ``workers``. MultiWorkerMirroredStrategy (several hosts or processes) is out of
        scope: ``rank``, ``world`` and ``address`` are not used. See ``parallel``."""
        from hal.backends.tf_backend.parallel import launch

        return launch(device, parallel)

    def compile_training(self, graph, device: Device, spec):
        from hal.backends.common.training import check_precision
        from hal.backends.tf_backend.parallel import check
        from hal.backends.tf_backend.training import TfTrainer

        check_precision(spec, device)  # fp16 on gpu only: 100x slower on cpu (lenet b64)
        unknown = sorted(set(spec.extra) - self.options)
        if unknown:
            raise OptionError(f"tf has no training options {unknown}; it has "
                              f"{sorted(self.options)}")
        check(spec.parallel)
        replicated = spec.parallel.workers > 1
        if replicated and spec.extra.get("xla") is True:
            raise OptionError("xla=True does not run under tf's MirroredStrategy (XLA "
                              "refuses variables placed on the other replicas' devices); "
                              "use xla=False with workers > 1, or workers=1")
        if replicated and spec.precision == "fp16":
            raise OptionError("precision 'fp16' (dynamic loss scaling) is not run under tf's "
                              "MirroredStrategy by HAL's tf trainer; use 'bf16' or 'fp32' "
                              "with workers > 1, or workers=1")
        # XLA off on CPU unless asked: TensorFlow's graph executor (oneDNN kernels) ran
        # training steps 1.3-2.6x faster and compiled them 3-4x sooner (lenet b64, resnet_lite
        # b32); every batch size is one more XLA compile, one trace serves them all without it.
        # Off under MirroredStrategy too (workers > 1, see above).
        extra = {"xla": device.info.kind != "cpu" and not replicated, **spec.extra}
        xla, nhwc = self.choices(CompileOptions(extra=extra))
        return TfTrainer(device, graph, spec, xla, nhwc)

    def compile(self, model, device: Device, options: CompileOptions):
        """The segment as ``tf.function``s; an identical segment compiled before (same graph,
        weights and choices, on the same device) is reused, and so is XLA's executable
        (``reuse``: TensorFlow never frees one)."""
        tf = import_tf()
        from hal.backends.common.lowering import lower
        from hal.backends.tf_backend.context import TfContext
        from hal.backends.tf_backend.executable import TfExecutable, TracedSegment
        from hal.backends.tf_backend.reuse import SEGMENTS, segment_key

        check_precision(self, options, device.string)
        xla, nhwc = self.choices(options)
        tf_device = self.tf_device(device)

        def trace() -> TracedSegment:
            low = {"fp32": None, "bf16": tf.bfloat16, "fp16": tf.float16}[options.precision]
            plan = lower(model, TABLE, self.name, params=False)
            return TracedSegment(plan, TfContext(TABLE, low), tf_device, xla, nhwc)

        key = segment_key(model, xla, nhwc, options.precision, tf_device)
        return TfExecutable(device, SEGMENTS.get(key, trace))

    # -- buffers -----------------------------------------------------------------
    def put(self, array: np.ndarray, device: Device):
        tf = import_tf()
        from hal.backends.tf_backend.executable import TfBuffer

        # tf.constant copies the host array (never aliases it) and lives in host memory;
        # tf.identity under the device moves it onto a GPU/TPU
        with tf.device(self.tf_device(device)):
            t = tf.constant(array)
            return TfBuffer(t if device.info.host_memory else tf.identity(t), device)

    def sync(self, device: Device) -> None:
        if device.info.kind != "cpu":
            import_tf().test.experimental.sync_devices()


def _self_test(tf, name: str) -> tuple[bool, str]:
    try:
        with tf.device(name):
            y = (tf.constant(np.arange(4, dtype=np.float32)) * 2 + 1).numpy()
        if not np.array_equal(y, [1, 3, 5, 7]):
            return False, f"tensorflow self-test on {name} returned {y.tolist()}"
        return True, ""
    except Exception as exc:
        return False, f"tensorflow self-test on {name} failed: {type(exc).__name__}: {exc}"


def _describe(tf, kind: str, index: int, name: str) -> str:
    label = kind.upper()
    if kind == "gpu":
        try:
            gpus = tf.config.list_physical_devices("GPU")
            label = tf.config.experimental.get_device_details(gpus[index]).get("device_name",
                                                                                label)
        except Exception:
            pass
    return f"{label} (tensorflow {tf.__version__})"


_ODD_CASTS = {"FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
              "INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2"}
