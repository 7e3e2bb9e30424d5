"""``cpu@openvino`` / ``gpu@openvino``: Intel OpenVINO, as a HAL device like any other.

The segment (after HAL's shared, pure-ONNX flow) is serialized once and read by OpenVINO's
ONNX frontend (``Core.read_model``), then compiled by the device's plugin
(``Core.compile_model``) with:

- ``INFERENCE_PRECISION_HINT``: ``f32`` for fp32 and int8, ``bf16`` / ``f16`` only when
  ``precision="bf16"`` / ``"fp16"`` is asked. OpenVINO's CPU plugin would otherwise run fp32
  models in bf16 on CPUs with AMX or AVX512_BF16; HAL never lowers precision silently, and
  ``Executable.info["inference_precision"]`` is read back from the compiled model.
- ``PERFORMANCE_HINT``: ``LATENCY`` (one stream, every core on each call) at ``opt_level`` 0-2,
  ``THROUGHPUT`` (several streams, for several threads calling at once) at ``opt_level`` 3;
  the backend option ``performance_hint`` overrides it.
- ``INFERENCE_NUM_THREADS``: the CPUs this process may run on when that is fewer than the
  machine has (affinity, taskset), else OpenVINO's own default; option ``num_threads``.
- dynamic dims stay dynamic: a model with a dynamic batch is compiled once, and every batch
  size runs on the same compiled model (OpenVINO's CPU plugin reshapes per call).

int8 runs the QDQ graphs of ``hal.passes.quantize``: OpenVINO's ONNX frontend turns
QuantizeLinear/DequantizeLinear pairs into FakeQuantize and its low-precision transformations
execute the quantized Conv/MatMul with int8 kernels. HAL's fused ``ai.hal`` FusedConv/FusedGemm
are expanded back into Conv/Gemm + activation first (as for ONNX Runtime).

Calls: one InferRequest per calling thread (created on its first call, reused after), inputs
shared with OpenVINO without a copy, outputs copied into arrays the caller owns.
``gpu@openvino`` is usable only when OpenVINO lists a GPU device and a tiny model runs on it.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from hal.backend import Backend, CompileOptions, Device, Executable, check_precision
from hal.backends.common.frameworks import import_openvino
from hal.backends.openvino.ops import OPS, refusal
from hal.backends.common.unfuse import RunsOnnxFiles
from hal.device import DeviceInfo
from hal.errors import BackendError, OptionError

#: HAL precision -> OpenVINO's INFERENCE_PRECISION_HINT, and the capability the device lists
_HINTS = {"fp32": ("f32", "FP32"), "int8": ("f32", "FP32"), "bf16": ("bf16", "BF16"),
          "fp16": ("f16", "FP16")}
_PERFORMANCE = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
_OV_KIND = {"cpu": "CPU", "gpu": "GPU"}


class OpenVINOBackend(RunsOnnxFiles, Backend):
    name = "openvino"
    kinds = ("cpu", "gpu")
    priority = 55  # below ONNX Runtime (60): a bare "cpu" keeps its default
    requires = ("openvino",)
    install_hint = "pip install hal-accel[openvino]"
    options = frozenset({"performance_hint", "num_threads", "num_streams"})
    precisions = ("fp32", "fp16", "bf16", "int8")
    ops = frozenset(OPS)
    refusal = staticmethod(refusal)  # ops.refusal: the standard ops declined, and why

    def __init__(self) -> None:
        self._core: Any = None
        self._lock = threading.Lock()
        self._ov_devices: dict[tuple[str, int], str] = {}

    def core(self):
        """The one ``openvino.Core`` of this process (created on first use)."""
        with self._lock:
            if self._core is None:
                self._core = import_openvino().Core()
            return self._core

    # -- devices -------------------------------------------------------------------
    def probe(self) -> list[DeviceInfo]:
        ov = import_openvino()
        core = self.core()
        listed = list(core.available_devices)
        version = ov.get_version().split("-")[0]
        out = []
        for kind, prefix in _OV_KIND.items():
            names = [d for d in listed if d.split(".")[0] == prefix]
            if not names:
                out.append(self.unusable(
                    kind, f"OpenVINO {version} lists no {prefix} device (it lists "
                          f"{', '.join(listed) or 'none'})", host_memory=kind == "cpu"))
                continue
            for index, ov_name in enumerate(names):
                try:
                    full = core.get_property(ov_name, "FULL_DEVICE_NAME")
                    caps = list(core.get_property(ov_name, "OPTIMIZATION_CAPABILITIES"))
                    _self_test(core, ov_name)
                except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types
                    out.append(self.unusable(kind, f"OpenVINO {version} {ov_name} failed a tiny "
                                                   f"model: {type(exc).__name__}: {exc}",
                                             index=index, host_memory=kind == "cpu"))
                    continue
                self._ov_devices[kind, index] = ov_name
                out.append(DeviceInfo(kind, index, self.name,
                                      name=f"OpenVINO {version} {ov_name}: {full}",
                                      host_memory=kind == "cpu",
                                      details={"openvino_device": ov_name,
                                               "optimization_capabilities": caps}))
        return out

    # -- compiling -----------------------------------------------------------------
    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        import onnx_ir as ir

        from hal.backends.openvino.executable import OpenVINOExecutable
        from hal.backends.common.unfuse import expand_hal_ops

        check_precision(self, options, device.string)
        ov_name = self._ov_devices.get((device.info.kind, device.info.index))
        if ov_name is None:
            raise BackendError(f"{device.string} was not probed usable")
        core = self.core()
        hint, capability = _HINTS[options.precision]
        caps = device.info.details.get("optimization_capabilities", [])
        if capability not in caps:
            raise OptionError(f"precision={options.precision!r} on {device.string}: OpenVINO "
                              f"says this {ov_name} has no {capability} support (it lists "
                              f"{', '.join(caps)}); use precision='fp32'")
        config = {"INFERENCE_PRECISION_HINT": hint, **_performance(options, device)}
        expanded = expand_hal_ops(model)
        data = ir.to_proto(model).SerializeToString()
        try:
            ov_model = core.read_model(io.BytesIO(data))
            stabilized = _stable_topk(ov_model)
            exact = _exact_extrema(ov_model)
            compiled = core.compile_model(ov_model, ov_name, config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types
            text = " ".join(str(exc).split())
            raise BackendError(f"OpenVINO could not compile the segment for {device.string}: "
                               f"{text[:600]}") from None
        info: dict[str, Any] = {
            "openvino_device": ov_name,
            "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")),
            "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "dynamic_inputs": [i.any_name for i in ov_model.inputs if i.partial_shape.is_dynamic],
        }
        if expanded:
            info["expanded_hal_ops"] = expanded
        if stabilized:
            info["stable_topk"] = stabilized
        if exact:
            info["exact_extrema"] = exact
        if options.precision != "fp32":
            info["precision"] = options.precision
        if options.precision == "int8":
            info["qdq_nodes"] = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear")
                                    for n in model.graph)
            info["int8_layers"] = _int8_layers(compiled)
        g = model.graph
        return OpenVINOExecutable(compiled, device, [v.name for v in g.inputs],
                                  [v.name for v in g.outputs], info,
                                  [_dims(v) for v in g.inputs],
                                  [(_dims(v), _np_dtype(v)) for v in g.outputs])


def _performance(options: CompileOptions, device: Device) -> dict:
    """PERFORMANCE_HINT, INFERENCE_NUM_THREADS and NUM_STREAMS from opt_level and options."""
    extra = options.extra
    hint = extra.get("performance_hint", "THROUGHPUT" if options.opt_level >= 3 else "LATENCY")
    if not isinstance(hint, str) or hint.upper() not in _PERFORMANCE:
        raise OptionError(f"performance_hint must be one of {list(_PERFORMANCE)}, got {hint!r}")
    config = {"PERFORMANCE_HINT": hint.upper()}
    threads = extra.get("num_threads")
    if threads is None and device.info.kind == "cpu":
        from hal.backends.common.unfuse import default_threads

        threads = default_threads() or None
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
            raise OptionError(f"num_threads must be a non-negative int (0 = OpenVINO's "
                              f"default), got {threads!r}")
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
    streams = extra.get("num_streams")
    if streams is not None:
        if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
            raise OptionError(f"num_streams must be a positive int, got {streams!r}")
        config["NUM_STREAMS"] = streams
    return config


def _int8_layers(compiled) -> dict:
    """The compute layers OpenVINO's CPU plugin runs in int8 (its runtime model's
    ``runtimePrecision``), by layer type: what shows that int8 ran as int8."""
    found: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else ""
        if kind in ("Convolution", "FullyConnected", "MatMul", "Deconvolution") \
                and prec in ("i8", "u8"):
            found[kind] = found.get(kind, 0) + 1
    return found


def _dims(v) -> list | None:
    """A value's dims: ints, names for symbolic dims, None for unknown ones."""
    if v.shape is None:
        return None
    return [d if isinstance(d, int) else (getattr(d, "value", None) or None)
            for d in v.shape.dims]


def _np_dtype(v):
    import numpy as np

    try:
        return np.dtype(v.dtype.numpy()) if v.dtype is not None else np.dtype(np.float32)
    except (TypeError, ValueError):
        return np.dtype(np.float32)


def _stable_topk(ov_model) -> int:
    """Make every TopK stable (ties keep their input order, as ONNX specifies; OpenVINO's ONNX
    frontend builds them unstable); returns how many."""
    n = 0
    for op in ov_model.get_ops():
        attrs = op.get_attributes() if op.get_type_name() == "TopK" else {}
        if "stable" in attrs and attrs.get("sort") != "none":  # Hardmax's TopK is unsorted
            op.set_attribute("stable", True)
            n += 1
    return n


def _exact_extrema(ov_model) -> int:
    """Float ReduceMax/ReduceMin as ONNX computes them where every reduced element is -inf
    (+inf), or there is none: OpenVINO's CPU plugin starts them at -FLT_MAX (+FLT_MAX), so a
    fully masked attention row would come out -3.4e38 and its softmax NaN. Each one gets a
    Select on "all elements are that infinity"; returns how many."""
    import numpy as np

    import_openvino()  # without its telemetry, before the submodule loads it
    import openvino.opset13 as ops

    n = 0
    for op in list(ov_model.get_ordered_ops()):
        kind = op.get_type_name()
        if kind not in ("ReduceMax", "ReduceMin") or not op.get_output_element_type(0).is_real():
            continue
        x, axes = op.input_value(0), op.input_value(1)
        keep = bool(op.get_attributes().get("keep_dims", False))
        inf = np.array(-np.inf if kind == "ReduceMax" else np.inf, np.float32)
        bound = ops.convert_like(ops.constant(inf), x)
        # "every element is that infinity" as the min of a 0/1 mask (the CPU plugin has no
        # ReduceLogicalAnd over run-time axes); an empty reduction's min is +FLT_MAX: true
        hits = ops.convert(ops.equal(x, bound), "f32")
        every = ops.greater(ops.reduce_min(hits, axes, keep), ops.constant(np.float32(0.5)))
        targets = list(op.output(0).get_target_inputs())
        fixed = ops.select(every, bound, op.output(0))
        for t in targets:
            t.replace_source_output(fixed.output(0))
        names = op.output(0).get_names()
        if names:
            fixed.output(0).get_tensor().set_names(set(names))
            op.output(0).get_tensor().set_names(set())
        n += 1
    return n


def _type_name(t) -> str:
    """An OpenVINO element type as its short name ("f32", "bf16")."""
    name = getattr(t, "to_string", None)
    return name() if callable(name) else str(t)


def _self_test(core, ov_name: str) -> None:
    import numpy as np
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    compiled = core.compile_model(core.read_model(io.BytesIO(m.SerializeToString())), ov_name,
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    y = compiled.create_infer_request().infer([np.array([-1, 2], np.float32)])[0]
    if not np.array_equal(y, [0, 2]):
        raise RuntimeError(f"Relu([-1, 2]) gave {y}")
