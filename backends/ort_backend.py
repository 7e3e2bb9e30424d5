"""``cpu@ort`` / ``cuda@ort``: ONNX Runtime, as a HAL device like any other.

The segment (after HAL's shared, pure-ONNX flow) is serialized once into an
InferenceSession on the kind's execution provider (CPUExecutionProvider,
CUDAExecutionProvider). ``opt_level`` maps to ONNX Runtime's graph optimization level:
0 -> ORT_DISABLE_ALL, 1 (the default) and up -> ORT_ENABLE_ALL, what a plain
InferenceSession uses (``Executable.info`` names the level used).

Precisions: fp32; int8 runs QDQ graphs (QuantizeLinear/DequantizeLinear) natively; fp16
converts the segment with onnxconverter-common's float16 converter (fp32 inputs and
outputs kept), refused when a weight is outside fp16's range.
Backend option ``intra_op_num_threads``: default the CPUs this process may run on, so
that ONNX Runtime never starts more threads than it can use.
HAL's fused ``ai.hal`` FusedConv/FusedGemm nodes are expanded back into the standard
Conv/Gemm + activation before the session is built (ONNX Runtime fuses those itself).
Buffers: host numpy arrays on cpu; OrtValues bound on the GPU (IOBinding) on cuda, so
``CompiledModel.run`` keeps results there.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import MappingProxyType

import numpy as np

from hal.backends.common.unfuse import RunsOnnxFiles, default_threads, expand_hal_ops
from hal.backend import Backend, Buffer, CompileOptions, Device, Executable, HostBuffer
from hal.device import DeviceInfo
from hal.errors import BackendError, OptionError

# opt_level -> ORT graph optimization level. HAL's default (1) is ORT's own default, ENABLE_ALL:
# its NCHWc layout transforms are what make conv nets fast on CPU (mobilenet_lite batch 64 ran
# 2.8x slower under ENABLE_BASIC than a plain InferenceSession, bench/backends.py).
_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_ALL", "ORT_ENABLE_ALL", "ORT_ENABLE_ALL")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_FP16_MAX = 65504.0

# Standard ops whose ONNX test cases all pass through HAL on ONNX Runtime's CPU provider
# (tests/test_conformance.py re-checks this on every run). Left out because ORT fails
# cases at opset 21: DFT, STFT (1e-5 noise where ONNX expects 0), Bernoulli (its own
# random stream), ImageDecoder (no kernel in the standard build), StringNormalizer
# (needs the en_US.UTF-8 locale installed).
_OPS = """Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
BatchNormalization BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Cast
CastLike Ceil Celu CenterCropPad Clip Col2Im Compress Concat Constant ConstantOfShape Conv
ConvInteger ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Det Div
Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax LpNormalization LpPool MatMul MatMulInteger Max MaxPool MaxRoiPool
MaxUnpool Mean MeanVarianceNormalization MelWeightMatrix Min Mish Mod Mul Multinomial Neg
NegativeLogLikelihoodLoss NonMaxSuppression NonZero Not OneHot Or PRelu Pad Pow QLinearConv
QLinearMatMul QuantizeLinear RNN Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
RegexFullMatch Relu Reshape Resize ReverseSequence RoiAlign Round Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax SoftmaxCrossEntropyLoss
Softplus Softsign SpaceToDepth Split Sqrt Squeeze StringConcat StringSplit Sub Sum Tan Tanh
TfIdfVectorizer ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze Where
Xor""".split()


_NO_NUMPY_EXCHANGE = {"BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                      "FLOAT8E5M2FNUZ", "INT4", "UINT4", "FLOAT4E2M1", "FLOAT8E8M0", "INT2",
                      "UINT2"}
_NARROW_INTS = {"Max": {"INT16", "UINT16"}, "Min": {"INT16", "UINT16"},
                "Pow": {"UINT64", "UINT32", "UINT16", "UINT8"}, "TopK": {"UINT64"}}


class OrtBackend(RunsOnnxFiles, Backend):
    name = "ort"
    kinds = ("cpu", "cuda")
    priority = 60
    requires = ("onnxruntime",)
    install_hint = "pip install hal-accel[ort]"
    options = frozenset({"intra_op_num_threads", "allow_spinning"})
    serving_options = MappingProxyType({"allow_spinning": False})
    precisions = ("fp32", "fp16", "int8")
    ops = frozenset(_OPS)

    def probe(self) -> list[DeviceInfo]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        out = []
        for kind, provider in _PROVIDERS.items():
            if provider not in available:
                why = (f"onnxruntime {ort.__version__} is a CPU build: pip install onnxruntime-gpu"
                       if kind == "cuda" else
                       f"onnxruntime {ort.__version__} has no {provider}")
                out.append(self.unusable(kind, why))
                continue
            try:
                _self_test(provider)
                out.append(DeviceInfo(kind, 0, self.name,
                                      name=f"onnxruntime {ort.__version__} {provider}",
                                      host_memory=kind == "cpu"))
            except Exception as exc:
                out.append(self.unusable(kind, f"{provider} failed a tiny session: "
                                               f"{type(exc).__name__}: {exc}"))
        return out

    def refusal(self, node) -> str | None:
        op = node.op_type
        dtypes = {v.dtype.name for v in list(node.inputs) + list(node.outputs)
                  if v is not None and v.dtype is not None}
        odd = dtypes & _NO_NUMPY_EXCHANGE
        if odd:
            return f"ort's Python API cannot exchange {sorted(odd)} tensors"
        narrow = dtypes & _NARROW_INTS.get(op, set())
        if narrow:
            return f"ort has no {op} kernel for {sorted(narrow)}"
        attr = {k: a.value for k, a in node.attributes.items()}
        if op in ("GRU", "LSTM", "RNN") and attr.get("layout", 0) == 1:
            return "ort runs recurrent ops with layout=0 only"
        if op == "ConvInteger" and len(node.inputs) > 3 and node.inputs[3] is not None \
                and node.inputs[3].shape is not None \
                and any(d != 1 for d in node.inputs[3].shape.dims):
            return "ort's ConvInteger takes a per-tensor weight zero point only"
        if op in ("ReduceMax", "ReduceMin") and "BOOL" in dtypes:
            return "ort fails on empty boolean reductions"
        if op == "MaxUnpool" and len(node.inputs) > 2 and node.inputs[2] is not None:
            return "ort's MaxUnpool ignores output_shape"
        if op == "LRN" and attr.get("size", 1) % 2 == 0:
            return "ort's LRN takes an odd size only"
        if op == "Dropout" and len(node.inputs) > 2 and node.inputs[2] is not None:
            return "training-mode Dropout is random and cannot be checked"
        if op == "Resize" and attr.get("coordinate_transformation_mode") == "align_corners" \
                and attr.get("mode", "nearest") != "nearest" and not _upsamples(node):
            return "ort's linear/cubic Resize with align_corners differs from ONNX when it " \
                   "may downsample"
        return None

    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        import onnx_ir as ir
        import onnxruntime as ort

        threads = options.extra.get("intra_op_num_threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                    or threads < 0):
            raise OptionError(f"intra_op_num_threads must be a non-negative int (0 = "
                              f"onnxruntime's default), got {threads!r}")
        if threads is None:
            threads = default_threads()
        spinning = options.extra.get("allow_spinning", True)
        if not isinstance(spinning, bool):
            raise OptionError(f"allow_spinning must be True or False, got {spinning!r}")
        so = ort.SessionOptions()
        if not spinning:
            # onnxruntime's pool threads otherwise spin for a while after each run: the
            # fastest for back-to-back calls, CPU taken from everything else in the process
            # (a server's request handling) between them
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              _LEVELS[options.opt_level])
        if threads:
            so.intra_op_num_threads = threads
        # fatal only: what onnxruntime refuses comes back as the BackendError below, so its own
        # red error lines on stderr would say the same thing twice
        so.log_severity_level = 4
        int8_note = ""
        qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph)
        fuses_qdq = _LEVELS[options.opt_level] in ("ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
        if qdq and fuses_qdq and device.info.kind == "cpu" and _int8_saturates():
            # keep QDQ as float math: ORT's integer kernels would give wrong numbers here
            so.add_session_config_entry("session.disable_quant_qdq", "1")
            int8_note = ("QDQ evaluated in float (this x86 CPU has no VNNI: ORT's u8s8 integer "
                         "kernels saturate 16-bit pair sums with full-range int8 weights)")
        expanded = expand_hal_ops(model)
        proto = ir.to_proto(model)
        if options.precision == "fp16":
            proto = _to_fp16(proto, device)
        provider = _PROVIDERS[device.info.kind]
        for disabled in ([], [_QDQ_PROPAGATION]):
            try:
                session = ort.InferenceSession(proto.SerializeToString(), so, providers=[provider],
                                               disabled_optimizers=disabled)
                break
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail types
                text = str(exc).strip()
                if not disabled and qdq and fuses_qdq and _QDQ_PROPAGATION_BUG in text:
                    continue  # once more without the propagation
                raise BackendError(f"onnxruntime could not build a session for {device.string}: "
                                   f"{text[:500]}") from None
        info = {"graph_optimization_level": _LEVELS[options.opt_level],
                "providers": ", ".join(session.get_providers()),
                "intra_op_num_threads": threads or "onnxruntime default",
                "allow_spinning": spinning}
        if disabled:
            info["disabled_optimizers"] = (
                f"{_QDQ_PROPAGATION}: with it onnxruntime {ort.__version__} builds a "
                f"QuantizeLinear whose zero point type disagrees with its output_dtype on this "
                f"graph (Q/DQ moved across MaxPool, then s8 turned to u8) and refuses the model")
        if expanded:
            info["expanded_hal_ops"] = expanded
        if options.precision != "fp32":
            info["precision"] = options.precision
        if options.precision == "int8":
            info["qdq_nodes"] = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear")
                                    for n in model.graph)
        if int8_note:
            info["int8"] = int8_note
        cls = OrtHostExecutable if device.info.host_memory else OrtDeviceExecutable
        return cls(session, device, info)

    def put(self, array: np.ndarray, device: Device) -> Buffer:
        if device.info.host_memory:
            return HostBuffer(array, device)
        return OrtBuffer.from_numpy(array, device)


def _upsamples(node) -> bool:
    """True when the Resize's constant scales are all >= 1."""
    scales = node.inputs[2] if len(node.inputs) > 2 else None
    if scales is None or scales.const_value is None:
        return False
    arr = scales.const_value.numpy()
    return arr.size > 0 and bool(np.all(arr >= 1))


def _to_fp16(proto, device: Device):
    """The graph in fp16 (fp32 inputs and outputs kept), or an OptionError saying why not."""
    from onnx import numpy_helper

    for t in proto.graph.initializer:
        if t.data_type == 1:  # FLOAT
            arr = numpy_helper.to_array(t)
            peak = float(np.max(np.abs(arr))) if arr.size else 0.0
            if peak > _FP16_MAX:
                raise OptionError(f"precision='fp16' on {device.string}: weight {t.name!r} "
                                  f"reaches {peak:g}, beyond fp16's range ({_FP16_MAX:g}); "
                                  f"use precision='fp32'")
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise OptionError(f"precision='fp16' on {device.string} converts the graph with "
                          f"onnxconverter-common, which is not installed: "
                          f"pip install onnxconverter-common (or use precision='fp32')") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(proto, keep_io_types=True)


# -- buffers and executables ----------------------------------------------------------
class OrtBuffer(Buffer):
    """An OrtValue in device memory (CUDA); shape and dtype are read from it on demand."""

    __slots__ = ("device", "value")

    def __init__(self, value, device: Device):
        self.device = device
        self.value = value

    @classmethod
    def from_numpy(cls, array: np.ndarray, device: Device) -> OrtBuffer:
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array),
                                                 device.info.kind, device.info.index)
        return cls(value, device)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape())

    @property
    def dtype(self) -> np.dtype:
        from onnx.helper import tensor_dtype_to_np_dtype

        return np.dtype(tensor_dtype_to_np_dtype(self.value.element_type()))

    def _to_host(self) -> np.ndarray:
        return self.value.numpy()


class OrtHostExecutable(Executable):
    """CPU provider: numpy in, numpy out, through ``session.run``."""

    def __init__(self, session, device: Device, info: dict):
        super().__init__(device, [i.name for i in session.get_inputs()],
                         [o.name for o in session.get_outputs()])
        self.session = session
        self.info = info
        self._run = _direct_run(session)
        self._names = tuple(self.input_names)

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        feeds = {n: (b.array if type(b) is HostBuffer else b.numpy())
                 for n, b in zip(self._names, buffers)}
        device = self.device
        return [HostBuffer(a, device) for a in self._run(self.output_names, feeds, None)]


def _direct_run(session):
    """``run(output_names, feeds, run_options)`` of the C++ session, skipping
    InferenceSession.run's Python checks of the feed names (~2 µs a call), which HAL has
    already made; the public ``run`` (same arguments) where that is not there."""
    import onnxruntime as ort

    inner = getattr(session, "_sess", None)
    if type(session).run is not ort.InferenceSession.run or not hasattr(inner, "run"):
        return session.run
    return inner.run


class OrtDeviceExecutable(Executable):
    """GPU providers: inputs and outputs bound as OrtValues in device memory (IOBinding)."""

    def __init__(self, session, device: Device, info: dict):
        super().__init__(device, [i.name for i in session.get_inputs()],
                         [o.name for o in session.get_outputs()])
        self.session = session
        self.info = info

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        device = self.device
        binding = self.session.io_binding()
        for name, buf in zip(self.input_names, buffers):  # HAL put them here (counted)
            binding.bind_ortvalue_input(name, buf.value)
        for name in self.output_names:
            binding.bind_output(name, device.info.kind, device.info.index)
        self.session.run_with_iobinding(binding)
        return [OrtBuffer(v, device) for v in binding.get_outputs()]


# onnxruntime's QDQ propagation (moving Q/DQ across MaxPool, Reshape...) followed by its s8 to
# u8 rewrite can leave a QuantizeLinear that fails its own type check; such a model is built
# again with the propagation off, and the executable's info says so
_QDQ_PROPAGATION = "QDQPropagationTransformer"
_QDQ_PROPAGATION_BUG = "does not match y_zero_point type"


def _int8_saturates() -> bool:
    """True on x86 CPUs without VNNI, where ORT multiplies u8 x s8 with vpmaddubsw whose
    int16 pair sums saturate (ORT's quantizer works around it with 7-bit weights,
    ``reduce_range``; HAL's int8 contract uses the full int8 range)."""
    import platform
    import re

    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True  # cannot tell: stay exact
    return re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", flags) is None


def _self_test(provider: str) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=[provider])
    y = s.run(None, {"x": np.array([-1, 2], np.float32)})[0]
    if not np.array_equal(y, [0, 2]):
        raise RuntimeError(f"Relu([-1, 2]) gave {y}")
