"""Dynamic int8 quantization (``calibration="dynamic"``): weights int8 ahead of time,
activations quantized at run time, in the form onnxruntime's ``quantize_dynamic`` writes.

Each Gemm / MatMul with a constant float weight (Gemm with transA=0 and a per-column bias)
becomes::

    DynamicQuantizeLinear(x) -> x_q (uint8), x_scale, x_zero_point   (one per input tensor)
    MatMulInteger(x_q, W_q, x_zero_point, W_zero_point[N]) -> int32
    Cast(to=float) -> Mul(Mul(x_scale, W_scale[N])) -> Add(bias)      (bias only if any)

``W_q`` is int8 [K, N], symmetric per output column (scale max|W[:, n]| / 127, zero points
0). onnxruntime fuses exactly this chain into MatMulIntegerToFloat (and, when the
DynamicQuantizeLinear feeds only one MatMulInteger, into DynamicQuantizeMatMul). Gemm's
alpha is folded into the weight, its beta into the bias; a Gemm's transB weight is stored
transposed.

With ``conv=True`` each Conv with a constant float weight becomes ConvInteger the same way:
int8 weights per output channel (the weight zero point is one scalar 0, the only form
onnxruntime's ConvInteger takes; the per-channel scales [O, 1, ...] go into the Mul).

Activations are uint8, asymmetric, one scale and zero point per tensor per call (exact 0 is
representable, so zero padding stays exact). No calibration data is needed. The user's
float graph is otherwise unchanged: other ops stay float.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.graph import add_initializer, replace_value
from hal.ir.schemas import is_onnx
from hal.passes.base import HalPass
from hal.passes.quantize import bias_vector, weight_layout

QMAX = 127
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale along ``axis``): symmetric, |q| <= 127, zero point 0."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.abs(w).max(axis=other).astype(np.float32)
    scale = np.where(absmax > 0, absmax / np.float32(QMAX), np.float32(1.0)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scale


class DynamicQuantize(HalPass):
    """Gemm/MatMul (and Conv with ``conv``) -> integer ops on run-time-quantized inputs."""

    hal_name = "DynamicQuantize"

    def __init__(self, conv: bool = True) -> None:
        super().__init__()
        self.conv = conv

    def _eligible(self, node: ir.Node) -> bool:
        if not is_onnx(node, "Gemm", "MatMul", *(("Conv",) if self.conv else ())):
            return False
        layout = weight_layout(node)
        return layout is not None and bias_vector(node, layout[0].shape[layout[1]])[0]

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        todo = [n for n in g if self._eligible(n)]
        if not todo:
            what = "Gemm/MatMul" + ("/Conv" if self.conv else "")
            why = f"nothing to quantize (no {what} with constant float weights)"
            self.detail = f"dynamic int8: {why}"
            warnings.warn(f"precision='int8', calibration='dynamic': {why}; the model runs in "
                          f"float", stacklevel=2)
            return PassResult(model, False)
        self.g = g
        self.names = {v.name for v in g.inputs} | set(g.initializers) \
            | {o.name for n in g for o in n.outputs if o.name}
        self.quantized: dict[int, tuple[ir.Value, ir.Value, ir.Value]] = {}
        n_conv = 0
        for node in todo:
            if node.op_type == "Conv":
                self._conv(node)
                n_conv += 1
            else:
                self._matmul(node)
        g.sort()
        n_mm = len(todo) - n_conv
        conv = f", {n_conv} Conv weights int8 per-channel (ConvInteger)" if n_conv else ""
        self.detail = (f"dynamic int8: {n_mm} Gemm/MatMul weights int8 per-channel{conv}, "
                       f"activations quantized at run time (DynamicQuantizeLinear, uint8 per "
                       f"tensor; {len(self.quantized)} of them)")
        return PassResult(model, True)

    # -- the rewrites -------------------------------------------------------------------
    def _matmul(self, node: ir.Node) -> None:
        w, axis = weight_layout(node)
        w_kn = w.T if axis == 0 else w  # MatMulInteger takes [K, N]
        q, scale = per_channel(w_kn, 1)
        n = q.shape[1]
        prefix = self._prefix(node)
        x_q, x_scale, x_zp = self._dynamic_quantize(node.inputs[0])
        acc = self._node("MatMulInteger", [
            x_q, add_initializer(self.g, q, f"{prefix}.weight_quantized"), x_zp,
            add_initializer(self.g, np.zeros(n, np.int8), f"{prefix}.weight_zero_point")],
            f"{prefix}_MatMulInteger", ir.DataType.INT32)
        self._rescale(node, acc, scale, bias_vector(node, n)[1], prefix)

    def _conv(self, node: ir.Node) -> None:
        w, _ = weight_layout(node)
        q, scale = per_channel(w, 0)
        o, rank = q.shape[0], q.ndim
        prefix = self._prefix(node)
        x_q, x_scale, x_zp = self._dynamic_quantize(node.inputs[0])
        attrs = [a for k, a in node.attributes.items() if k in _CONV_ATTRS]
        acc = self._node("ConvInteger", [
            x_q, add_initializer(self.g, q, f"{prefix}.weight_quantized"), x_zp,
            add_initializer(self.g, np.array(0, np.int8), f"{prefix}.weight_zero_point")],
            f"{prefix}_ConvInteger", ir.DataType.INT32, attrs)
        per_o = (o,) + (1,) * (rank - 2)  # broadcasts along the channels of [N, O, ...]
        _, b = bias_vector(node, o)
        self._rescale(node, acc, scale.reshape(per_o), None if b is None else b.reshape(per_o),
                      prefix)

    def _rescale(self, node: ir.Node, acc: ir.Value, w_scale: np.ndarray,
                 b: np.ndarray | None, prefix: str) -> None:
        """int32 ``acc`` -> float: Cast, times x_scale * w_scale, plus the bias ``b``; it replaces
        ``node``'s output, and ``node`` goes."""
        _, x_scale, _ = self.quantized[id(node.inputs[0])]
        as_float = self._node("Cast", [acc], f"{prefix}_Cast", ir.DataType.FLOAT,
                              [ir.AttrInt64("to", ir.DataType.FLOAT)])
        scales = self._node("Mul", [x_scale, add_initializer(self.g, w_scale,
                                                             f"{prefix}.weight_scale")],
                            f"{prefix}_scales_Mul", ir.DataType.FLOAT)
        y = self._node("Mul", [as_float, scales], f"{prefix}_output_scale_Mul", ir.DataType.FLOAT)
        if b is not None:
            y = self._node("Add", [y, add_initializer(self.g, b.astype(np.float32),
                                                      f"{prefix}.bias")],
                           f"{prefix}_bias_Add", ir.DataType.FLOAT)
        replace_value(node.outputs[0], y)
        self.g.remove(node, safe=True)

    def _dynamic_quantize(self, x: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
        """One DynamicQuantizeLinear per float tensor, shared by every node reading it."""
        if id(x) not in self.quantized:
            base = x.name or "input"
            node = ir.Node("", "DynamicQuantizeLinear", [x], num_outputs=3,
                           name=self._fresh(f"{base}_DynamicQuantizeLinear"))
            for out, suffix, dtype in zip(node.outputs, ("quantized", "scale", "zero_point"),
                                          (ir.DataType.UINT8, ir.DataType.FLOAT,
                                           ir.DataType.UINT8)):
                out.name = self._fresh(f"{base}_{suffix}")
                out.type = ir.TensorType(dtype)
            node.outputs[0].shape = x.shape
            node.outputs[1].shape = node.outputs[2].shape = ir.Shape([])
            self.g.append(node)
            self.quantized[id(x)] = tuple(node.outputs)
        return self.quantized[id(x)]

    # -- graph building -----------------------------------------------------------------
    def _node(self, op: str, inputs: list, name: str, dtype: ir.DataType,
              attrs: list | None = None) -> ir.Value:
        node = ir.Node("", op, inputs, attrs or [], name=self._fresh(name))
        out = node.outputs[0]
        out.name = self._fresh(f"{name}_output")
        out.type = ir.TensorType(dtype)
        self.g.append(node)
        return out

    def _fresh(self, name: str) -> str:
        base, k = name, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def _prefix(self, node: ir.Node) -> str:
        return node.name or node.op_type.lower()
