"""The ops ``cpu@iree`` declares, and the cases among them it refuses (``refusal``).

``OPS`` is the operator set of neural-network inference — what HAL's zoo, ONNX's light models,
CNNs, MLPs and transformers are made of — for which every ONNX test case passes through HAL on
IREE (``tests/test_conformance.py`` re-checks it on every run), once ``refusal`` has declined
the cases below. Each ONNX case is a separate compile (0.4 s or more on the reference machine),
so the set is kept to what models use, and the long tail runs on the fallback device: ops IREE
passes but HAL does not declare, to keep the suite's time bounded (measured 2026-12-05): ArgMax,
ArgMin, trigonometry, Sign, Round, IsInf, IsNaN, Shrink, ThresholdedRelu, Celu, And/Or/Not,
GreaterOrEqual, LessOrEqual, Size, Range, Trilu, TopK, GatherElements, GatherND, the other
Reduce ops, MeanVarianceNormalization, CastLike; left out because IREE fails cases of them:
Resize (tf_crop_and_resize, axes, antialias, keep_aspect_ratio_policy, cubic exclude_outside,
align_corners downsampling), CumSum, Softsign, Compress, BitShift, Col2Im, DFT, STFT, DeformConv,
MaxUnpool, RoiAlign, Unique, QLinearConv, QLinearMatMul, DynamicQuantizeLinear,
LpNormalization (NaN for a zero norm), LpPool, NonMaxSuppression, GridSample, Einsum, the
recurrent ops, the losses, AffineGrid, Bernoulli, ImageDecoder.

What ``refusal`` declines (IREE's ONNX import, torch-mlir's ONNX lowering, fails or differs):

- f64 (iree-compile demotes it to f32 by default, and some lowerings fail without that);
  bf16, the fp8 and 4-bit types, strings: not exchanged as numpy arrays;
- axes, starts/ends, pads given at run time (Reduce*, Slice, Pad other than constant): the
  lowering needs them as constants; Pad modes edge/reflect/wrap;
- MatMul of a 1-D operand with a 3-D or wider one; ConvTranspose with auto_pad or groups;
  AveragePool with ceil_mode; MaxPool's indices output; Reshape with allowzero=1;
  ScatterElements with a max/min reduction; Gelu's tanh approximation (1e-5 off);
  training-mode Dropout.
"""

from __future__ import annotations

from hal.ir.attributes import attribute

OPS = """Abs Add AveragePool BatchNormalization Cast Ceil Clip Concat Constant ConstantOfShape
Conv ConvTranspose DepthToSpace Div Dropout Elu Equal Erf Exp Expand Flatten Floor Gather Gelu
Gemm GlobalAveragePool Greater GroupNormalization HardSigmoid HardSwish Identity
InstanceNormalization LRN LayerNormalization LeakyRelu Less Log LogSoftmax MatMul Max MaxPool
Mean Min Mish Mul Neg PRelu Pad Pow Reciprocal ReduceMax ReduceMean ReduceMin ReduceSum Relu
Reshape Selu Shape Sigmoid Slice Softmax Softplus SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh
Tile Transpose Unsqueeze Where""".split()

_ODD_TYPES = {"DOUBLE", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
              "INT4", "UINT4", "FLOAT4E2M1", "FLOAT8E8M0", "INT2", "UINT2", "STRING"}
_REDUCE = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
           "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"}


def _const(v) -> bool:
    """Whether the value is fixed at compile time (an initializer that is not a graph input,
    or a Constant node's output)."""
    if v is None:
        return True
    if v.const_value is not None and not v.is_graph_input():
        return True
    p = v.producer()
    return p is not None and p.op_type == "Constant"


def _given(node, i: int) -> bool:
    return len(node.inputs) > i and node.inputs[i] is not None


def _rank(v) -> int | None:
    return None if v is None or v.shape is None else len(v.shape.dims)


def refusal(node) -> str | None:
    """Why IREE cannot run this ``node`` as ONNX specifies, or None."""
    dtypes = {v.dtype.name for v in list(node.inputs) + list(node.outputs)
              if v is not None and v.dtype is not None}
    if "DOUBLE" in dtypes:
        return "iree-compile demotes f64 to f32 (its default; without it some lowerings fail)"
    odd = dtypes & _ODD_TYPES
    if odd:
        return f"iree does not exchange {sorted(odd)} tensors as numpy arrays"
    op = node.op_type
    if op in _REDUCE and _given(node, 1) and not _const(node.inputs[1]):
        return f"iree's ONNX lowering needs {op}'s axes at compile time"
    if op == "Slice" and not all(_const(v) for v in node.inputs[1:]):
        return "iree's ONNX lowering needs Slice's starts, ends, axes and steps at compile time"
    if op == "Pad":
        if attribute(node, "mode", "constant") != "constant":
            return f"iree's ONNX lowering fails Pad mode={attribute(node, 'mode')!r}"
    if op == "MatMul":
        ra, rb = _rank(node.inputs[0]), _rank(node.inputs[1])
        if ra is None or rb is None or (1 in (ra, rb) and max(ra, rb) > 2):
            return "iree's ONNX lowering fails MatMul of a 1-D operand with a 3-D or wider one"
    if op == "ConvTranspose":
        if attribute(node, "auto_pad", "NOTSET") != "NOTSET":
            return "iree's ONNX lowering fails ConvTranspose with auto_pad"
        if attribute(node, "group", 1) != 1:
            return "iree's ONNX lowering fails grouped ConvTranspose"
    if op == "AveragePool" and attribute(node, "ceil_mode", 0):
        return "iree's ONNX lowering fails or differs for AveragePool with ceil_mode"
    if op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1] is not None:
        return "iree's ONNX lowering has no MaxPool indices output"
    if op == "Reshape" and attribute(node, "allowzero", 0):
        return "iree-compile crashes on Reshape with allowzero=1"
    if op == "Gelu" and attribute(node, "approximate", "none") == "tanh":
        return "iree's tanh approximation of Gelu is 1e-5 off ONNX's"
    if op == "Dropout" and _given(node, 2):
        return "iree has no training-mode Dropout"
    return None
