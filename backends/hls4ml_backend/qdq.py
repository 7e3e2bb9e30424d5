"""HAL's QDQ segment -> the QONNX graph hls4ml's ONNX frontend reads exactly.

hls4ml handles a QONNX ``Quant`` exactly only when its scale is one power of two for the
whole tensor: then the scale becomes the binary point of an ``ap_fixed`` type. A float
scale (or per-channel scales on an activation) turns into ``ApplyAlpha`` layers computed
in a default fixed-point type, and hls4ml only warns while it returns wrong numbers. So:

- every activation scale must be a power of two (``float_scales="requantize"`` first
  rounds them up to powers of two, as ``power_of_two=True`` would have);
- per-channel power-of-two weight (and int32 bias) scales are folded here into float
  constants on one common power-of-two grid, so each weight tensor is one ``ap_fixed``
  type a few bits wider than int8 and the arithmetic stays exact;
- the segment's inputs are quantized on the host with QuantizeLinear's rounding and fed
  as exact multiples of their scale, so the accelerator's input type loses nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hal.errors import ModelError

QUANT_DOMAIN = "qonnx.custom_op.general"


class FloatScaleError(ModelError):
    """A quantization scale is not a power of two, which hls4ml would compute wrongly."""


@dataclass
class Port:
    """One segment input or output as the host sees it and the C simulation sees it."""

    name: str
    shape: list          # per-sample shape (ONNX layout, batch dim dropped)
    scale: float         # the tensor's (power-of-two) quantization scale
    int8: bool           # True: the segment exchanges int8 values; False: float32
    dtype: str = "float32"

    def describe(self) -> str:
        kind = "int8" if self.int8 else "float32 (quantized)"
        return f"{self.name}: {kind} {self.shape}, scale 2^{int(math.log2(self.scale))}"


@dataclass
class Prepared:
    model: onnx.ModelProto
    inputs: list[Port]
    outputs: list[Port]
    requantized: list[str] = field(default_factory=list)


def is_pow2(values: np.ndarray) -> bool:
    v = np.asarray(values, np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return False
    mant, _ = np.frexp(v)
    return bool(np.all(mant == 0.5))


def pow2_up(values: np.ndarray) -> np.ndarray:
    """Round scales up to powers of two (what ``power_of_two=True`` calibration does)."""
    return np.exp2(np.ceil(np.log2(np.asarray(values, np.float64)))).astype(np.float32)


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}

    def const(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def set_const(self, name: str, arr: np.ndarray) -> None:
        t = numpy_helper.from_array(arr, name)
        if name in self.inits:
            self.inits[name].CopyFrom(t)
        else:
            self.g.initializer.append(t)
            self.inits[name] = self.g.initializer[-1]

    def producer(self, name: str):
        return next((n for n in self.g.node if name in n.output), None)

    def consumers(self, name: str) -> list:
        return [n for n in self.g.node if name in n.input]


def _attr(node, name, default=None):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


def scale_problems(model: onnx.ModelProto) -> list[str]:
    """Every Q/DQ whose scale hls4ml cannot compute exactly, as 'node (tensor): why'."""
    g = _Graph(model)
    out = []
    for n in g.g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        s = g.const(n.input[1])
        z = g.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        weights = n.op_type == "DequantizeLinear" and n.input[0] in g.inits
        if s is None:
            out.append(f"{n.name} ({n.input[0]}): scale is not a constant")
        elif not is_pow2(s):
            bad = [float(v) for v in np.ravel(s) if not is_pow2(np.array([v]))][:3]
            out.append(f"{n.name} ({n.input[0]}): scale {bad} is not a power of two")
        elif s.size != 1 and not weights:
            out.append(f"{n.name} ({n.input[0]}): per-channel scale on an activation")
        if z is not None and np.any(z != 0):
            out.append(f"{n.name} ({n.input[0]}): zero point is not 0 (HAL's int8 is symmetric)")
    return out


def requantize_pow2(model: onnx.ModelProto) -> list[str]:
    """Every scale to a power of two, in place: activations rounded up (nothing calibrated
    saturates; their statistics are gone), weights per channel to the power of two above or
    below that reconstructs them better, int8 weights and int32 biases re-rounded onto the
    new scales. Returns the scales that changed."""
    g = _Graph(model)
    changed = []
    new_scale: dict[str, np.ndarray] = {}
    # activation scales first: a bias scale is s_x * s_w of the new scales
    for n in g.g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in g.inits:
            s = g.const(n.input[1])
            if s is not None and not is_pow2(s):
                new_scale[n.input[1]] = pow2_up(s)
    for name, s in new_scale.items():
        g.set_const(name, s)
        changed.append(name)
    for n in g.g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in g.inits:
            continue
        s = g.const(n.input[1]).astype(np.float64)
        q = g.const(n.input[0])
        if is_pow2(s) or q is None:
            continue
        if q.dtype == np.int8:
            axis = _attr(n, "axis", 1)
            shp = [1] * q.ndim
            if s.ndim:
                shp[axis % q.ndim] = -1
            w = q * s.reshape(shp)
            other = tuple(i for i in range(q.ndim) if i != axis % q.ndim) if s.ndim else None
            # the weights are known: per channel, the power of two above or below, whichever
            # reconstructs them better (as power_of_two=True calibration does)
            up = pow2_up(s).astype(np.float64)
            s2 = np.where(_weight_error(w, up / 2, shp, other) < _weight_error(w, up, shp, other),
                          up / 2, up)
            q2 = _snap(w, s2, shp).astype(np.int8)
            g.set_const(n.input[0], q2)
            g.set_const(n.input[1], s2.astype(np.float32))
            changed.append(n.input[1])
    for n in g.g.node:  # int32 biases: scale = new s_x * new s_w of their layer
        if n.op_type != "DequantizeLinear" or n.input[0] not in g.inits:
            continue
        q = g.const(n.input[0])
        s = g.const(n.input[1]).astype(np.float64)
        if q.dtype != np.int32 or is_pow2(s):
            continue
        layer = next((c for c in g.consumers(n.output[0])), None)
        s2 = _bias_scale(g, layer) if layer is not None else None
        if s2 is None:
            continue  # left as is; scale_problems() will name it
        b = q * s
        g.set_const(n.input[0], np.clip(np.rint(b / s2), -2**31, 2**31 - 1).astype(np.int32))
        g.set_const(n.input[1], s2.astype(np.float32))
        changed.append(n.input[1])
    return changed


def _snap(w: np.ndarray, scale: np.ndarray, shape: list) -> np.ndarray:
    return np.clip(np.rint(w / scale.reshape(shape)), -127, 127)


def _weight_error(w: np.ndarray, scale: np.ndarray, shape: list, axes) -> np.ndarray:
    return ((_snap(w, scale, shape) * scale.reshape(shape) - w) ** 2).sum(axis=axes)


def _bias_scale(g: _Graph, layer) -> np.ndarray | None:
    dq_x, dq_w = g.producer(layer.input[0]), g.producer(layer.input[1])
    if dq_x is None or dq_w is None:
        return None
    sx, sw = g.const(dq_x.input[1]), g.const(dq_w.input[1])
    if sx is None or sw is None:
        return None
    return (sx.astype(np.float64) * sw.astype(np.float64)).reshape(-1)


def prepare(model: onnx.ModelProto) -> Prepared:
    """A copy of ``model`` ready for QONNX: ports on the host side, weights folded to a
    common power-of-two grid, explicit attributes, batch 1. Scales must be powers of two."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = _Graph(m)
    inputs = [_prepare_input(g, v) for v in list(g.g.input) if v.name not in g.inits]
    outputs = [_prepare_output(g, v) for v in list(g.g.output)]
    _fold_constant_dq(g)
    _scalar_params(g)
    _explicit_attributes(g)
    _batch_one(g)
    return Prepared(m, inputs, outputs)


def _shape(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else None
            for d in vi.type.tensor_type.shape.dim]


def _prepare_input(g: _Graph, vi) -> Port:
    name, elem = vi.name, vi.type.tensor_type.elem_type
    users = g.consumers(name)
    want = "DequantizeLinear" if elem == TensorProto.INT8 else "QuantizeLinear"
    if elem not in (TensorProto.INT8, TensorProto.FLOAT) or not users or \
            any(u.op_type != want for u in users):
        raise ModelError(f"segment input {name!r} must feed QuantizeLinear (float) or "
                         f"DequantizeLinear (int8) only; it feeds "
                         f"{sorted({u.op_type for u in users})}")
    scales = {float(np.ravel(g.const(u.input[1]))[0]) for u in users}
    if len(scales) != 1:
        raise ModelError(f"segment input {name!r} is quantized with several scales {scales}")
    scale = scales.pop()
    if elem == TensorProto.INT8:
        # the host feeds x_q * s; a Quant on the graph side marks the type of the input
        vi.type.tensor_type.elem_type = TensorProto.FLOAT
        for u in users:
            q_out = f"{name}__hal_q"
            idx = list(g.g.node).index(u)
            g.g.node.insert(idx, helper.make_node("QuantizeLinear", [name, u.input[1],
                                                                     u.input[2]],
                                                  [q_out], name=f"{u.name}__hal_q"))
            u.input[0] = q_out
    return Port(name, _shape(vi)[1:], scale, elem == TensorProto.INT8)


def _prepare_output(g: _Graph, vi) -> Port:
    name = vi.name
    prod = g.producer(name)
    if prod is None or prod.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        raise ModelError(f"segment output {name!r} must come from QuantizeLinear or "
                         f"DequantizeLinear (a quantized tensor), not "
                         f"{prod.op_type if prod else 'an input'}")
    scale = float(np.ravel(g.const(prod.input[1]))[0])
    int8 = prod.op_type == "QuantizeLinear"
    if int8:  # the C simulation returns y_q * s; the host turns it back into int8
        inner = f"{name}__hal_int8"
        for n in g.g.node:
            n.output[:] = [inner if o == name else o for o in n.output]
            if n is not prod:
                n.input[:] = [inner if i == name else i for i in n.input]
        g.g.node.append(helper.make_node("DequantizeLinear", [inner, *prod.input[1:3]], [name],
                                         name=f"{prod.name}__hal_dq"))
        vi.type.tensor_type.elem_type = TensorProto.FLOAT
    return Port(name, _shape(vi)[1:], scale, int8)


def _fold_constant_dq(g: _Graph) -> None:
    """DQ(int weights, per-channel 2^-k) -> float constant on the grid 2^-max(k) + Quant."""
    nodes = []
    for n in g.g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in g.inits:
            nodes.append(n)
            continue
        q = g.const(n.input[0]).astype(np.int64)
        s = g.const(n.input[1]).astype(np.float64)
        shp = [1] * q.ndim
        if s.ndim and s.size > 1:
            shp[_attr(n, "axis", 1) % q.ndim] = -1
        exps = np.rint(np.log2(s)).astype(np.int64)
        base = int(exps.min())
        ints = q << (exps - base).reshape(shp)
        bits = max(int(np.abs(ints).max()).bit_length() + 1, 2)
        vals = (ints.astype(np.float64) * 2.0 ** base).astype(np.float32)
        if not np.array_equal(vals.astype(np.float64) / 2.0 ** base, ints):
            raise ModelError(f"{n.name}: constant {n.input[0]} does not fit float32 exactly "
                             f"on its power-of-two grid ({bits} bits)")
        out = n.output[0]
        names = [f"{out}__hal_{k}" for k in ("float", "scale", "zero", "bits")]
        for nm, arr in zip(names, (vals, np.array(2.0 ** base, np.float32),
                                   np.array(0, np.float32), np.array(bits, np.float32))):
            g.set_const(nm, arr)
        nodes.append(helper.make_node("Quant", names, [out], name=n.name, domain=QUANT_DOMAIN,
                                      narrow=0, rounding_mode="ROUND", signed=1))
    del g.g.node[:]
    g.g.node.extend(nodes)
    used = {i for n in g.g.node for i in n.input}
    keep = [t for t in g.g.initializer if t.name in used]
    del g.g.initializer[:]
    g.g.initializer.extend(keep)
    if not any(d.domain == QUANT_DOMAIN for d in g.model.opset_import):
        g.model.opset_import.append(helper.make_opsetid(QUANT_DOMAIN, 1))


def _scalar_params(g: _Graph) -> None:
    """Per-tensor scales and zero points as 0-d tensors without ``axis``: QONNX reshapes an
    axis-carrying scale to the tensor's rank, and hls4ml then computes an array bit width
    (and fails) under numpy 2."""
    for n in g.g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        params = [g.const(name) if name else None for name in n.input[1:3]]
        if any(p is None or p.size != 1 for p in params):
            continue
        for name, arr in zip(n.input[1:3], params):
            if arr.ndim:
                g.set_const(name, arr.reshape(()))
        keep = [a for a in n.attribute if a.name != "axis"]
        del n.attribute[:]
        n.attribute.extend(keep)


def _explicit_attributes(g: _Graph) -> None:
    """QONNX's channels-last ops read strides/pads/dilations/group without defaults."""
    for n in g.g.node:
        if n.op_type not in ("Conv", "MaxPool"):
            continue
        have = {a.name for a in n.attribute}
        k = _attr(n, "kernel_shape")
        if k is None and n.op_type == "Conv":
            w = g.producer(n.input[1])
            arr = g.const(w.input[0]) if w is not None else g.const(n.input[1])
            k = list(arr.shape[2:])
            n.attribute.append(helper.make_attribute("kernel_shape", k))
        d = len(k)
        defaults = {"strides": [1] * d, "pads": [0] * (2 * d), "dilations": [1] * d}
        if n.op_type == "Conv":
            defaults["group"] = 1
        for name, v in defaults.items():
            if name not in have:
                n.attribute.append(helper.make_attribute(name, v))


def _batch_one(g: _Graph) -> None:
    for vi in list(g.g.input) + list(g.g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    del g.g.value_info[:]


def constant_value_infos(model: onnx.ModelProto) -> None:
    """hls4ml's frontend looks every node input's shape up in value_info, constants too."""
    have = {v.name for v in model.graph.value_info}
    for t in model.graph.initializer:
        if t.name not in have:
            model.graph.value_info.append(
                helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
