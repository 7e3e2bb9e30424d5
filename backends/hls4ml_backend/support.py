"""Which nodes of a QDQ graph ``fpga@hls4ml`` runs: quantized layers hls4ml computes exactly.

hls4ml's ONNX frontend (through QONNX) maps these onto fixed-point layers:

- ``QuantizeLinear`` / ``DequantizeLinear`` with constant scales and int8 (or int32 bias)
  data, zero points 0;
- ``Conv`` (2-D, group 1, no dilation), ``Gemm`` (alpha = beta = 1, no transA) and
  ``MatMul`` whose input comes from a DequantizeLinear and whose weights are a
  DequantizeLinear of a constant, followed by ``Relu`` and/or ``QuantizeLinear``;
- ``Relu`` between such a layer and its QuantizeLinear;
- ``MaxPool`` (2-D, no ceil mode or dilation) and ``Flatten`` (axis 1) between DQ and Q.

Everything else — float ops, softmax and other lookup-table activations hls4ml only
approximates, average pooling — falls back through HAL's partitioner.
"""

from __future__ import annotations

import onnx_ir as ir
from hal.ir.attributes import attribute

LAYERS = ("Conv", "Gemm", "MatMul")
BETWEEN = ("MaxPool", "Flatten")


def _producer_op(v: ir.Value | None) -> str | None:
    p = v.producer() if v is not None else None
    return p.op_type if p is not None and p.domain in ("", "ai.onnx") else None


def _is_const(v: ir.Value | None) -> bool:
    return v is not None and (v.const_value is not None or v.is_initializer())


def _const_dq(v: ir.Value | None) -> bool:
    """``v`` is DequantizeLinear(constant int8 / int32)."""
    p = v.producer() if v is not None else None
    return p is not None and p.op_type == "DequantizeLinear" and _is_const(p.inputs[0])


def _consumer_ops(node: ir.Node) -> set[str]:
    return {c.op_type for out in node.outputs for c in out.consumers()}


def _quantized_output(node: ir.Node) -> str | None:
    ops = _consumer_ops(node)
    if not ops:
        return f"{node.op_type} output is not quantized again (no QuantizeLinear follows)"
    if ops - {"QuantizeLinear", "Relu"}:
        return (f"{node.op_type} output feeds {sorted(ops - {'QuantizeLinear', 'Relu'})}, "
                f"not QuantizeLinear: hls4ml only runs layers whose result is requantized")
    return None


def reason(node: ir.Node) -> str | None:
    """None if hls4ml runs ``node`` exactly, else why not.

    Beyond each node's own pattern, a segment handed to hls4ml must begin at a
    QuantizeLinear (float in) or a DequantizeLinear's int8 input and never fork across
    devices, so: an activation DequantizeLinear whose output forks into hls4ml work stays
    off, a layer runs here only when its input DequantizeLinear does, and a Relu only when
    the layer before it does."""
    why = _local(node)
    if why is not None or node.op_type == "QuantizeLinear":
        return why
    if node.op_type == "DequantizeLinear":
        if _is_const(node.inputs[0]):
            return None
        users = list(node.outputs[0].consumers())
        if len(users) <= 1 or all(_local(u) is not None for u in users):
            return None  # feeds one node, or ends the segment (its consumers run elsewhere)
        return (f"its output feeds {len(users)} nodes, some of which hls4ml runs: a quantized "
                f"tensor may not fork between hls4ml and another device")
    if node.op_type == "Relu" and _producer_op(node.inputs[0]) in LAYERS:
        layer_why = reason(node.inputs[0].producer())
        return None if layer_why is None else f"the {node.inputs[0].producer().op_type} " \
                                              f"before it does not run on hls4ml"
    dq = node.inputs[0].producer() if node.inputs else None
    if dq is not None and dq.op_type == "DequantizeLinear" and reason(dq) is not None:
        return f"its input DequantizeLinear does not run on hls4ml: {reason(dq)}"
    return None


def _local(node: ir.Node) -> str | None:
    """The node's own pattern, without looking at whether its neighbours run here."""
    if node.domain not in ("", "ai.onnx"):
        return f"op domain {node.domain!r} is not an hls4ml layer"
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear"):
        return _qdq_reason(node)
    if op in LAYERS:
        return _layer_reason(node)
    if op == "Relu":
        if _producer_op(node.inputs[0]) not in LAYERS + ("DequantizeLinear",):
            return "Relu runs on hls4ml only after a quantized Conv/Gemm/MatMul"
        return None if _consumer_ops(node) == {"QuantizeLinear"} else \
            "Relu output is not requantized by a QuantizeLinear"
    if op in BETWEEN:
        if _producer_op(node.inputs[0]) != "DequantizeLinear":
            return f"{op} input is not quantized (no DequantizeLinear before it)"
        if _consumer_ops(node) != {"QuantizeLinear"}:
            return f"{op} output is not requantized by a QuantizeLinear"
        if op == "Flatten" and attribute(node, "axis", 1) != 1:
            return "hls4ml flattens with axis=1 only"
        if op == "MaxPool":
            k = attribute(node, "kernel_shape") or []
            if len(k) != 2:
                return "hls4ml runs 2-D MaxPool only here"
            if attribute(node, "ceil_mode", 0) or any(d != 1 for d in attribute(node, "dilations",
                                                                         [1, 1])):
                return "hls4ml's MaxPool has no ceil_mode or dilation"
            if attribute(node, "auto_pad", "NOTSET") != "NOTSET":
                return "hls4ml's ONNX MaxPool takes explicit pads, not auto_pad"
        return None
    return (f"hls4ml (through HAL) runs quantized Conv/Gemm/MatMul/Relu/MaxPool/Flatten "
            f"in QDQ form; {op} is not among them")


def _qdq_reason(node: ir.Node) -> str | None:
    ins = list(node.inputs)
    if len(ins) < 2 or not _is_const(ins[1]):
        return f"{node.op_type} scale is not a constant"
    if len(ins) < 3 or ins[2] is None:
        return f"{node.op_type} without a zero point is uint8; HAL's int8 is symmetric int8"
    zp = ins[2].dtype
    if node.op_type == "QuantizeLinear":
        return None if zp == ir.DataType.INT8 else \
            f"QuantizeLinear to {zp} (hls4ml here takes int8 activations)"
    if _is_const(ins[0]):  # weights (int8) or bias (int32): every user must run here too
        if zp not in (ir.DataType.INT8, ir.DataType.INT32):
            return f"DequantizeLinear of {zp} constants"
        users = list(node.outputs[0].consumers())
        if not users:
            return "a constant nothing here uses"
        for c in users:
            why = reason(c) if c.op_type in LAYERS else f"{c.op_type} is not a layer"
            if why:
                return f"its {c.op_type} does not run on hls4ml ({why})"
        return None
    if zp != ir.DataType.INT8:
        return f"DequantizeLinear of {zp} activations"
    return None


def _layer_reason(node: ir.Node) -> str | None:
    op = node.op_type
    ins = list(node.inputs)
    if _producer_op(ins[0]) != "DequantizeLinear":
        return (f"{op} is not quantized (its input has no DequantizeLinear): compile with "
                f"precision='int8'")
    if len(ins) < 2 or not _const_dq(ins[1]):
        return f"{op} weights are not a DequantizeLinear of constants"
    if op in ("Conv", "Gemm") and len(ins) > 2 and ins[2] is not None and not _const_dq(ins[2]):
        return f"{op} bias is not a DequantizeLinear of int32 constants"
    if op == "Conv":
        shape = ins[0].shape
        if shape is not None and len(shape) != 4:
            return "hls4ml runs 2-D Conv only here"
        if attribute(node, "group", 1) != 1:
            return "grouped/depthwise Conv (group > 1) is not mapped to hls4ml here"
        if any(d != 1 for d in attribute(node, "dilations", [1, 1])):
            return "hls4ml's Conv has no dilation"
        if attribute(node, "auto_pad", "NOTSET") != "NOTSET":
            return "hls4ml's ONNX Conv takes explicit pads, not auto_pad"
    if op == "Gemm" and (attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0
                         or attribute(node, "beta", 1.0) != 1.0):
        return "Gemm with transA, alpha or beta is not mapped to hls4ml"
    if op == "MatMul" and ins[0].shape is not None and len(ins[0].shape) != 2:
        return "hls4ml runs 2-D MatMul (a dense layer) only"
    return _quantized_output(node)
