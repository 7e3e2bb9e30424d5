"""``cpu@ort`` / ``cuda@ort``: ONNX Runtime, as a HAL device like any other.

The segment (after HAL's flow) is serialized once into an InferenceSession.
``opt_level`` maps to ONNX Runtime's graph optimization level:
0 -> ORT_DISABLE_ALL, 1 -> ORT_ENABLE_BASIC, 2 -> ORT_ENABLE_EXTENDED, 3 -> ORT_ENABLE_ALL.
``precision="int8"`` runs QDQ graphs natively. Backend option: ``intra_op_num_threads``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hal.backend import Backend, Buffer, CompileOptions, Device, Executable, HostBuffer
from hal.device import DeviceInfo
from hal.errors import BackendError, OptionError

_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# Standard ops whose ONNX test cases all pass through HAL on ONNX Runtime's CPU provider
# (tests/test_conformance.py re-checks this on every run).
_OPS = """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Cast CastLike Ceil Celu Clip Compress Concat
Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Det Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish Hardmax
Identity InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual
Log LogSoftmax LpNormalization LpPool MatMul MatMulInteger Max MaxPool MaxRoiPool MaxUnpool Mean
MeanVarianceNormalization Min Mish Mod Mul Multinomial Neg NonMaxSuppression NonZero Not OneHot
Or PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear RNN Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare
Relu Reshape ReverseSequence RoiAlign Round Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze
Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze Where
Xor""".split()


_NO_NUMPY_EXCHANGE = {"BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
                      "FLOAT8E5M2FNUZ", "INT4", "UINT4", "FLOAT4E2M1", "FLOAT8E8M0", "INT2",
                      "UINT2"}
_NARROW_INTS = {"Max": {"INT16", "UINT16"}, "Min": {"INT16", "UINT16"},
                "Pow": {"UINT64", "UINT32", "UINT16", "UINT8"}, "TopK": {"UINT64"}}


class OrtBackend(Backend):
    name = "ort"
    kinds = ("cpu", "cuda")
    priority = 60
    requires = ("onnxruntime",)
    install_hint = "pip install hal-accel[ort]"
    options = frozenset({"intra_op_num_threads"})
    precisions = ("fp32", "int8")
    ops = frozenset(_OPS)

    def probe(self) -> list[DeviceInfo]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        out = []
        for kind, provider in _PROVIDERS.items():
            if provider not in available:
                hint = "pip install onnxruntime-gpu" if kind == "cuda" else ""
                out.append(self.unusable(kind, f"onnxruntime {ort.__version__} has no {provider}"
                                               + (f": {hint}" if hint else "")))
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

    def supports(self, node, device: DeviceInfo) -> bool | str:
        ok = super().supports(node, device)
        if ok is not True:
            return ok
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
                and node.inputs[3].shape is not None and node.inputs[3].shape.numel() > 1:
            return "ort's ConvInteger takes a per-tensor weight zero point only"
        if op in ("ReduceMax", "ReduceMin") and "BOOL" in dtypes:
            return "ort fails on empty boolean reductions"
        if op == "MaxUnpool" and len(node.inputs) > 2 and node.inputs[2] is not None:
            return "ort's MaxUnpool ignores output_shape"
        if op == "Dropout" and len(node.inputs) > 2 and node.inputs[2] is not None:
            return "training-mode Dropout is random and cannot be checked"
        return True

    def compile(self, model, device: Device, options: CompileOptions) -> Executable:
        import onnx_ir as ir
        import onnxruntime as ort

        threads = options.extra.get("intra_op_num_threads")
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise OptionError(f"intra_op_num_threads must be a non-negative int, got {threads!r}")
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              _LEVELS[options.opt_level])
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        int8_note = ""
        qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph)
        if qdq and device.info.kind == "cpu" and options.opt_level >= 2 and _int8_saturates():
            # keep QDQ as float math: ORT's integer kernels would give wrong numbers here
            so.add_session_config_entry("session.disable_quant_qdq", "1")
            int8_note = ("QDQ evaluated in float (this x86 CPU has no VNNI: ORT's u8s8 integer "
                         "kernels saturate 16-bit pair sums with full-range int8 weights)")
        provider = _PROVIDERS[device.info.kind]
        data = ir.to_proto(model).SerializeToString()
        try:
            session = ort.InferenceSession(data, so, providers=[provider])
        except Exception as exc:
            raise BackendError(f"onnxruntime could not build a session for {device.string}: "
                               f"{str(exc).strip()[:500]}") from None
        exe = OrtExecutable(session, device, _LEVELS[options.opt_level])
        if int8_note:
            exe.info["int8"] = int8_note
        return exe

    def put(self, array: np.ndarray, device: Device) -> Buffer:
        if device.info.host_memory:
            return HostBuffer(array, device)
        return OrtBuffer.from_numpy(array, device)


class OrtBuffer(Buffer):
    """An OrtValue on a non-host device (CUDA)."""

    def __init__(self, value, device: Device):
        super().__init__(device, tuple(value.shape()), _dtype(value))
        self.value = value

    @classmethod
    def from_numpy(cls, array: np.ndarray, device: Device) -> OrtBuffer:
        import onnxruntime as ort

        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda",
                                                 device.info.index)
        return cls(value, device)

    def _to_host(self) -> np.ndarray:
        return self.value.numpy()


def _dtype(value) -> np.dtype:
    from onnx.helper import tensor_dtype_to_np_dtype

    return np.dtype(tensor_dtype_to_np_dtype(value.element_type()))


class OrtExecutable(Executable):
    def __init__(self, session, device: Device, level: str):
        super().__init__(device, [i.name for i in session.get_inputs()],
                         [o.name for o in session.get_outputs()])
        self.session = session
        self._run = session.run
        self.info = {"graph_optimization_level": level,
                     "providers": ", ".join(session.get_providers())}

    def run(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        device = self.device
        if device.info.host_memory:
            feeds = {n: (b.array if isinstance(b, HostBuffer) else b.numpy())
                     for n, b in zip(self.input_names, buffers)}
            return [HostBuffer(a, device) for a in self._run(self.output_names, feeds)]
        feeds = {n: b.value for n, b in zip(self.input_names, buffers)}
        outs = self.session.run_with_ort_values(self.output_names, feeds)
        return [OrtBuffer(v, device) for v in outs]


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
