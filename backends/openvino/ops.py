"""The ops ``cpu@openvino`` declares, and the cases among them it refuses (``refusal``).

``OPS`` holds the standard ops whose ONNX test cases all pass through HAL on OpenVINO's CPU
plugin once ``refusal`` has declined the cases below (``tests/test_conformance.py`` re-checks
this on every run). Left out because OpenVINO fails cases of them: Bernoulli and the random
ops (its own random stream), DFT, STFT, MelWeightMatrix, TfIdfVectorizer, ImageDecoder, Det,
DeformConv, MaxUnpool (no conversion, or wrong results), DynamicQuantizeLinear (rounds one
element of six differently), NonMaxSuppression (keeps a box whose IoU equals the threshold);
the Optional, Sequence and String ops (not tensors, or no conversion).

What ``refusal`` declines, each because OpenVINO's CPU plugin computes it differently from
ONNX (found by ONNX's own cases, or by hand where the cases use small values only):

- f64 and u64 tensors: the plugin computes them as f32 and u32 (±inf saturates to ±FLT_MAX,
  1e300 becomes FLT_MAX, 2**63 + 5 wraps); bf16, the fp8 and 4-bit types: not exchanged as
  numpy arrays or given back as another type;
- int64 *computed* in the graph (arithmetic, reductions, casts into int64 from another type)
  from values that are not shapes, indices or int32-sized constants, and int64 constants
  beyond ±2**31: the plugin holds int64 as int32 (2**40 + 1 gives 1). Shape arithmetic
  (Shape -> Gather -> Mul -> Concat -> Reshape) runs, and int64 that is only moved (Gather,
  Concat, Reshape) runs: its values stay what they were — user inputs of int64 data beyond
  ±2**31 are the documented exception (``docs/backends/openvino.md``);
- shapes it cannot make static: Unsqueeze axes and Tile repeats given at run time, several
  Reduce axes given at run time with keepdims=0 (the output's rank would be dynamic), a
  Concat of an empty tensor;
- attribute values it runs differently: Resize with antialias, tf_crop_and_resize,
  half_pixel_symmetric, keep_aspect_ratio_policy, cubic with exclude_outside, linear/cubic
  align_corners that may downsample; MaxPool/AveragePool ceil_mode where ONNX drops the last
  window (it starts in the padding: MaxPool, LpPool); batch-first (layout=1) GRU/LSTM/RNN and LSTM peepholes;
  RoiAlign mode="max"; Pad mode="wrap"; blocked (block_size) and 16-bit QuantizeLinear /
  DequantizeLinear, QuantizeLinear with a scale given at run time (multiplied by its
  reciprocal, a .5 tie may round the other way); 3-D Col2Im and 5-D GridSample; training-mode Dropout;
- a Dropout or Identity from a graph input straight to a graph output (OpenVINO folds it and
  the input loses its name);
- If/Loop/Scan whose bodies read a value of the outer graph other than a graph input (its
  ONNX frontend does not find them).
"""

from __future__ import annotations

import math

import numpy as np

from hal.ir.attributes import attribute

OPS = """Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh
AveragePool BatchNormalization BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor
BlackmanWindow Cast CastLike Ceil Celu CenterCropPad Clip Col2Im Compress Concat Constant
ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND
Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LpNormalization LpPool MatMul MatMulInteger Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NegativeLogLikelihoodLoss NonZero Not OneHot Or
PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear RNN Range Reciprocal
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign Round
Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax SoftmaxCrossEntropyLoss Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum
Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze Upsample Where
Xor""".split()

#: element types whose values OpenVINO's CPU plugin does not keep or numpy cannot exchange
_ODD_TYPES = {"DOUBLE": "computes f64 as f32 (±inf saturates, 1e300 becomes FLT_MAX)",
              "UINT64": "computes u64 as u32",
              "BFLOAT16": "gives bf16 back as f16",
              "STRING": "runs numeric tensors only"}
_NARROW = {"FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "INT4", "UINT4",
           "FLOAT4E2M1", "FLOAT8E8M0", "INT2", "UINT2"}
#: ops that compute new values (rather than move them): int64 results of these may leave int32
_ARITHMETIC = frozenset("""Abs Add BitShift CumSum Div Einsum Gemm MatMul Max Mean Min Mod Mul Neg
Pow Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Sign Sub Sum""".split())
#: types whose values all fit in int32 (a cast from them into int64 stays exact)
_INT32_SAFE = {"BOOL", "INT8", "INT16", "INT32", "UINT8", "UINT16"}
_I32 = (-(2 ** 31), 2 ** 31 - 1)
_REDUCE_AXES_INPUT = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                      "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"}


def _const(v) -> np.ndarray | None:
    """The value's array when it is fixed at compile time (an initializer that is not a graph
    input, or a Constant node's output), else None."""
    if v is None:
        return None
    if v.const_value is not None and not v.is_graph_input():
        return v.const_value.numpy()
    p = v.producer()
    if p is not None and p.op_type == "Constant" and "value" in p.attributes:
        return p.attributes["value"].value.numpy()
    return None


def _given(node, i: int) -> bool:
    return len(node.inputs) > i and node.inputs[i] is not None


def refusal(node) -> str | None:
    """Why OpenVINO cannot run this ``node`` as ONNX specifies, or None."""
    values = [v for v in list(node.inputs) + list(node.outputs) if v is not None]
    dtypes = {v.dtype.name for v in values if v.dtype is not None}
    for t in sorted(dtypes):
        if t in _ODD_TYPES:
            return f"openvino's CPU plugin {_ODD_TYPES[t]}"
    narrow = dtypes & _NARROW
    if narrow:
        return f"openvino does not exchange {sorted(narrow)} tensors as numpy arrays"
    why = _int64(node, values)
    if why:
        return why
    why = _control_flow(node)
    if why:
        return why
    check = _CHECKS.get(node.op_type)
    return check(node) if check else None


def _int64(node, values) -> str | None:
    op = node.op_type
    outs = {v.dtype.name for v in node.outputs if v is not None and v.dtype is not None}
    if "INT64" in outs and op in _ARITHMETIC and not all(
            _bounded(v) for v in node.inputs if v is not None and _is_int64(v)):
        return (f"openvino's CPU plugin computes int64 as int32: {op} of int64 values that "
                f"do not come from shapes or indices could leave int32's range")
    if op in ("Cast", "CastLike") and "INT64" in outs:
        src = node.inputs[0].dtype.name if node.inputs[0].dtype is not None else "?"
        if src not in _INT32_SAFE | {"INT64"}:
            return (f"openvino's CPU plugin holds int64 as int32: a cast from {src} to int64 "
                    f"could leave int32's range")
    for v in node.inputs:
        if v is not None and v.dtype is not None and v.dtype.name == "INT64":
            a = _const(v)
            if a is not None and a.size and (a.min() < _I32[0] or a.max() > _I32[1]):
                return (f"openvino's CPU plugin holds int64 as int32: constant {v.name!r} "
                        f"has values beyond ±2**31")
    return None


def _is_int64(v) -> bool:
    return v.dtype is not None and v.dtype.name == "INT64"


#: ops whose int64 results are sizes or positions in a tensor (never beyond int32 for tensors
#: of fewer than 2**31 elements)
_INDEX_RESULTS = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero", "TopK", "Unique"}
#: ops that move, pick or combine int64 values: a result built from bounded values stays
#: within the bounds HAL cares about (shape arithmetic: products of dims, element counts)
_SHAPE_MATH = {"Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Neg", "Abs", "Concat", "Gather",
               "Slice", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Cast", "CastLike",
               "Range", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "Where", "Expand",
               "Flatten", "Sum", "Split", "Tile", "Transpose", "CumSum"}


#: ops whose result holds values of their first input only (the others are indices, shapes)
_DATA_FIRST = {"Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Expand", "Tile", "Flatten",
               "Transpose", "Split", "Identity"}


def _bounded(v, depth: int = 0) -> bool:
    """Whether int64 value ``v`` is built only from tensor shapes, indices and int32-sized
    constants (shape arithmetic), so OpenVINO's int32 holds it exactly."""
    a = _const(v)
    if a is not None:
        return a.size == 0 or (a.min() >= _I32[0] and a.max() <= _I32[1])
    p = v.producer()
    if p is None or v.is_graph_input() or depth > 64:
        return False
    if p.op_type in _INDEX_RESULTS:
        return True
    if p.op_type not in _SHAPE_MATH:
        return False
    picked = p.inputs[:1] if p.op_type in _DATA_FIRST else \
        p.inputs[1:3] if p.op_type == "Where" else p.inputs
    ints = [i for i in picked if i is not None and _is_int64(i)]
    if p.op_type in ("Cast", "CastLike") and not ints:
        src = p.inputs[0].dtype.name if p.inputs[0].dtype is not None else "?"
        return src in _INT32_SAFE
    return all(_bounded(i, depth + 1) for i in ints)


def _subgraphs(node) -> list:
    import onnx_ir as ir

    out = []
    for a in node.attributes.values():
        if a.type == ir.AttributeType.GRAPH:
            out.append(a.value)
        elif a.type == ir.AttributeType.GRAPHS:
            out.extend(a.value)
    return out


def _control_flow(node) -> str | None:
    subs = _subgraphs(node)
    if not subs:
        return None
    graphs = set()
    stack = list(subs)
    while stack:
        g = stack.pop()
        graphs.add(id(g))
        for n in g.all_nodes():
            stack.extend(_subgraphs(n))
    for g in subs:
        for n in g.all_nodes():
            for v in n.inputs:
                if v is None or (v.graph is not None and id(v.graph) in graphs):
                    continue
                p = v.producer()
                if p is not None and p.graph is not None and id(p.graph) in graphs:
                    continue
                if not v.is_graph_input():
                    return (f"openvino's ONNX frontend does not find outer-scope value "
                            f"{v.name!r} inside {node.op_type}'s body")
    return None


# -- per-op checks ------------------------------------------------------------------------
def _float(v) -> bool:
    return v is not None and v.dtype is not None and v.dtype.name in ("FLOAT", "FLOAT16")


def _reduce(node) -> str | None:
    if _given(node, 1) and _const(node.inputs[1]) is None \
            and not attribute(node, "keepdims", 1):
        shape = node.inputs[1].shape
        if shape is None or list(shape.dims) != [1]:
            return (f"openvino cannot tell {node.op_type}'s output rank from several axes "
                    f"given at run time (keepdims=0)")
    return None


def _axes_input(node) -> str | None:
    if _given(node, 1) and _const(node.inputs[1]) is None:
        return f"openvino needs {node.op_type}'s axes at compile time"
    return None


def _tile(node) -> str | None:
    if _const(node.inputs[1]) is None:
        return "openvino needs Tile's repeats at compile time"
    return None


def _resize(node) -> str | None:
    mode = attribute(node, "mode", "nearest")
    ctm = attribute(node, "coordinate_transformation_mode", "half_pixel")
    if attribute(node, "antialias", 0):
        return "openvino's Resize does not antialias as ONNX does"
    if ctm in ("tf_crop_and_resize", "half_pixel_symmetric"):
        return f"openvino has no Resize coordinate_transformation_mode={ctm!r}"
    if attribute(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return "openvino's Resize sizes differ from ONNX with keep_aspect_ratio_policy"
    if mode == "cubic" and attribute(node, "exclude_outside", 0):
        return "openvino's cubic Resize differs from ONNX with exclude_outside=1"
    if ctm == "align_corners" and mode != "nearest" and not _upsamples(node):
        return "openvino's linear/cubic Resize with align_corners differs from ONNX when it " \
               "may downsample"
    return None


def _upsamples(node) -> bool:
    scales = _const(node.inputs[2]) if _given(node, 2) else None
    return scales is not None and scales.size > 0 and bool(np.all(scales >= 1))


def _pool(node) -> str | None:
    if not attribute(node, "ceil_mode", 0):
        return None
    x = node.inputs[0]
    kernel = list(attribute(node, "kernel_shape", []) or [])
    if x.shape is None or not kernel or any(not isinstance(d, int) for d in x.shape.dims[2:]):
        return f"openvino may keep a last {node.op_type} window that ONNX drops (ceil_mode " \
               f"with a dynamic input shape)"
    n = len(kernel)
    strides = list(attribute(node, "strides", []) or [1] * n)
    dil = list(attribute(node, "dilations", []) or [1] * n)
    pads = list(attribute(node, "pads", []) or [0] * 2 * n)
    if attribute(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    for i, size in enumerate(x.shape.dims[2:]):
        span = (kernel[i] - 1) * dil[i] + 1
        out = math.ceil((size + pads[i] + pads[i + n] - span) / strides[i]) + 1
        if (out - 1) * strides[i] >= size + pads[i]:
            return (f"openvino keeps the last {node.op_type} window that ONNX drops "
                    f"(ceil_mode: it starts in the padding)")
    return None


def _recurrent(node) -> str | None:
    if attribute(node, "layout", 0) == 1:
        return f"openvino runs {node.op_type} with layout=0 only"
    if node.op_type == "LSTM" and _given(node, 7):
        return "openvino's LSTM has no peepholes"
    return None


def _roialign(node) -> str | None:
    if attribute(node, "mode", "avg") == "max":
        return "openvino's RoiAlign mode='max' differs from ONNX"
    return None


def _pad(node) -> str | None:
    if attribute(node, "mode", "constant") == "wrap":
        return "openvino has no Pad mode='wrap'"
    return None


def _quant(node) -> str | None:
    if attribute(node, "block_size", 0):
        return f"openvino has no blocked {node.op_type}"
    if node.op_type == "QuantizeLinear" and _const(node.inputs[1]) is None:
        return ("openvino quantizes with a run-time scale by its reciprocal: an exact .5 tie "
                "can round the other way")
    ints = node.outputs[0] if node.op_type == "QuantizeLinear" else node.inputs[0]
    if ints.dtype is not None and ints.dtype.name in ("INT16", "UINT16"):
        return f"openvino rounds 16-bit {node.op_type} differently from ONNX"
    return None


def _col2im(node) -> str | None:
    shape = node.inputs[1].shape if _given(node, 1) else None
    if shape is None or list(shape.dims) != [2]:
        return "openvino runs 2-D Col2Im only"
    return None


def _gridsample(node) -> str | None:
    shape = node.inputs[0].shape
    if shape is None or len(shape.dims) != 4:
        return "openvino runs 4-D (2-D spatial) GridSample only"
    return None


def _concat(node) -> str | None:
    for v in node.inputs:
        if v is not None and v.shape is not None and 0 in v.shape.dims:
            return "openvino's ONNX frontend refuses a Concat of an empty tensor"
    return None


def _dropout(node) -> str | None:
    if _given(node, 2):
        return "training-mode Dropout is random and openvino does not convert it"
    return _passthrough(node)


def _passthrough(node) -> str | None:
    x, y = node.inputs[0], node.outputs[0]
    if x is not None and x.is_graph_input() and y.is_graph_output():
        return (f"openvino folds a {node.op_type} from a graph input to a graph output and the "
                f"input loses its name")
    return None


_CHECKS = {
    **{op: _reduce for op in _REDUCE_AXES_INPUT},
    "Unsqueeze": _axes_input, "Tile": _tile, "Concat": _concat,
    "Resize": _resize, "MaxPool": _pool, "LpPool": _pool,
    "GRU": _recurrent, "LSTM": _recurrent, "RNN": _recurrent,
    "RoiAlign": _roialign, "Pad": _pad,
    "QuantizeLinear": _quant, "DequantizeLinear": _quant,
    "Col2Im": _col2im, "GridSample": _gridsample,
    "Dropout": _dropout, "Identity": _passthrough,
}
