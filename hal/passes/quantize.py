"""Post-training int8 quantization into standard ONNX QDQ form (HAL's int8 contract, QDQ.md).

- Conv / Gemm / MatMul with constant weights: int8 weights per output channel
  (``DequantizeLinear(W_q, s_w[O], 0, axis)``), int32 bias with scale ``s_x * s_w``, the
  input as ``Q -> DQ`` with its calibrated scale, and the output (after a following Relu or
  Clip(0, 6), kept in place so backends can fuse it) as ``Q -> DQ``.
- MaxPool / Flatten / Reshape / Transpose on a quantized tensor that feeds quantized work:
  ``DQ -> op -> Q -> DQ`` with their input's scale (exact on integers).
- Everything else stays float: it reads the DQ output, and its result is quantized only
  where a quantized op consumes it.

Symmetric: every zero point is 0, activations per tensor (|x| range / 127), weights per
output channel. ``power_of_two`` makes every scale a power of two: of the two around the
calibrated scale, the one with the smaller squared quantization error (weights: on the
weights; activations: on the calibration histogram), as shift-only hardware needs.

``fake=True`` is quantization-aware training's form of the same rewrite, at the same points:
weights stay float initializers (they train) behind an ``ai.hal`` ``FakeQuantize`` that scales
them per output channel as above at every step, each ``Q -> DQ`` is a ``FakeQuantize`` with
the calibrated scale, and biases stay float (their int32 rounding, below one part in
``s_x * s_w``, is left to the conversion). ``scales`` (value name -> scale) replaces
calibration: converting a trained model reuses the scales its training saw, so the int8 model
computes what training rounded to.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.graph import add_initializer, const, set_input, sole_consumer
from hal.ir.schemas import FAKE_QUANTIZE, HAL_DOMAIN, is_onnx
from hal.passes.base import HalPass
from hal.passes.calibration import TensorStats, collect
from hal.ir.attributes import attribute

COMPUTE = ("Conv", "Gemm", "MatMul")
PASS_THROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose")
QMAX = 127
_I32 = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)


def _float32(v: ir.Value | None) -> bool:
    return v is not None and (v.dtype is None or v.dtype == ir.DataType.FLOAT)


def weight_layout(node: ir.Node) -> tuple[np.ndarray, int] | None:
    """(float weight, output-channel axis) of a Conv/Gemm/MatMul the pass quantizes, else None."""
    if not is_onnx(node, *COMPUTE) or len(node.inputs) < 2 or not _float32(node.inputs[0]) \
            or const(node.inputs[0]) is not None:
        return None
    w = const(node.inputs[1])
    if w is None or w.dtype != np.float32:
        return None
    if node.op_type == "Conv":
        return (w, 0) if w.ndim >= 3 else None
    if w.ndim != 2:
        return None
    if node.op_type == "MatMul":
        return w, 1
    if attribute(node, "transA", 0):
        return None
    return (w * np.float32(attribute(node, "alpha", 1.0)), 0 if attribute(node, "transB", 0) else 1)


def bias_vector(node: ir.Node, n_out: int) -> tuple[bool, np.ndarray | None]:
    """(ok, float32 [n_out] bias or None) of a Conv/Gemm/MatMul: ok is False when the bias is
    not constant or varies along anything but the output channels (the node then stays float)."""
    if node.op_type == "MatMul" or len(node.inputs) < 3 or node.inputs[2] is None:
        return True, None
    b = const(node.inputs[2])
    if b is None or b.dtype != np.float32:
        return False, None
    if node.op_type == "Gemm":
        if b.size not in (1, n_out) or b.ndim > 2 or (b.ndim == 2 and b.shape[0] != 1):
            return False, None  # a C that varies along rows is not a bias
        b = np.broadcast_to(b.reshape(-1) * np.float32(attribute(node, "beta", 1.0)), (n_out,))
    elif b.shape != (n_out,):
        return False, None
    return True, b.astype(np.float32)


def _quantizable(node: ir.Node) -> bool:
    layout = weight_layout(node)
    return layout is not None and bias_vector(node, layout[0].shape[layout[1]])[0]


def _activation(node: ir.Node) -> ir.Node | None:
    """The Relu or Clip(0, 6) right after ``node``, kept between it and its QuantizeLinear."""
    act = sole_consumer(node.outputs[0])
    if act is None or act.inputs[0] is not node.outputs[0]:
        return None
    if is_onnx(act, "Relu"):
        return act
    if is_onnx(act, "Clip") and len(act.inputs) == 3:
        lo, hi = const(act.inputs[1]), const(act.inputs[2])
        if lo is not None and hi is not None and lo.size == 1 and hi.size == 1 \
                and float(lo.reshape(())) == 0.0 and float(hi.reshape(())) == 6.0:
            return act
    return None


def pow2(scale: np.ndarray) -> np.ndarray:
    """Each scale rounded up to a power of two."""
    return np.exp2(np.ceil(np.log2(scale.astype(np.float64)))).astype(np.float32)


class Quantize(HalPass):
    """The float model -> QDQ int8, calibrated on ``batches`` run through cpu@reference."""

    hal_name = "Quantize"

    def __init__(self, batches, method: str = "minmax", percentile: float = 99.99,
                 power_of_two: bool = False, source: str = "", fake: bool = False,
                 scales: dict[str, float] | None = None) -> None:
        super().__init__()
        self.batches = batches
        self.method = method
        self.percentile = percentile
        self.power_of_two = power_of_two
        self.source = source
        self.fake = fake
        self.given = scales
        #: the activation scales used, by value name (what ``scales=`` takes back)
        self.activation_scales: dict[str, float] = {}

    # -- scales -------------------------------------------------------------------------
    def _scale_of(self, v: ir.Value, stats) -> np.float32:
        if self.given is not None:
            if v.name not in self.given:
                raise KeyError(f"no scale given for {v.name!r} (the scales are of another "
                               f"graph)")
            scale = np.float32(self.given[v.name])
        else:
            scale = self._act_scale(stats[v.name])
        self.activation_scales[v.name] = float(scale)
        return scale

    def _act_scale(self, s: TensorStats) -> np.float32:
        r = s.range(self.method, self.percentile)
        scale = np.float32(r / QMAX if r > 0 else 1.0)
        if not self.power_of_two or r == 0:
            return scale
        up = pow2(np.array([scale]))[0]
        down = up / np.float32(2)  # more resolution, clips the top of the range
        return down if s.squared_error(down) < s.squared_error(up) else up

    def _weight_scale(self, w: np.ndarray, axis: int) -> np.ndarray:
        other = tuple(i for i in range(w.ndim) if i != axis)
        absmax = np.abs(w).max(axis=other).astype(np.float32)
        scale = np.where(absmax > 0, absmax / np.float32(QMAX), np.float32(1.0)).astype(np.float32)
        if not self.power_of_two:
            return scale
        shape = [1] * w.ndim
        shape[axis] = -1

        def error(s):
            s = s.reshape(shape)
            return ((np.clip(np.rint(w / s), -QMAX, QMAX) * s - w) ** 2).sum(axis=other)

        up = pow2(scale)
        down = up / np.float32(2)
        return np.where(error(down) < error(up), down, up).astype(np.float32)

    # -- the rewrite --------------------------------------------------------------------
    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        if self.batches is None and self.given is None:
            n = sum(is_onnx(n, "QuantizeLinear", "DequantizeLinear") for n in g)
            self.detail = f"already quantized ({n} QuantizeLinear/DequantizeLinear): kept as given"
            return PassResult(model, False)
        _name_values(g)
        nodes = list(g)
        compute = [n for n in nodes if _quantizable(n)]
        if not compute:
            import warnings

            self.detail = "nothing to quantize (no Conv/Gemm/MatMul with constant float weights)"
            warnings.warn(f"precision='int8': {self.detail}; the model runs in float",
                          stacklevel=2)
            return PassResult(model, False)
        acts = {id(n): _activation(n) for n in compute}
        chain_out = {id(n): (acts[id(n)] or n).outputs[0] for n in compute}
        wanted = [n.inputs[0].name for n in compute] + [v.name for v in chain_out.values()]
        stats = collect(model, wanted, self.batches) if self.given is None else None

        self.g, self.scales = g, {}
        if self.fake:
            model.opset_imports[HAL_DOMAIN] = 1
        else:
            self.zp8 = add_initializer(g, np.array(0, np.int8), "zero_point_int8")
        is_compute = {id(n) for n in compute}
        kept_acts = {id(a) for a in acts.values() if a is not None}
        n_pass, kept_float = 0, set()
        for node in nodes:
            if id(node) in is_compute:
                self._quantize_compute(node, acts[id(node)], chain_out[id(node)], stats)
            elif is_onnx(node, *PASS_THROUGH) and self._pass_through(node, is_compute):
                n_pass += 1
            elif id(node) not in kept_acts:
                kept_float.add(node.op_type)
        g.sort()
        n_act = len(kept_acts)
        method = self.method + (f" {self.percentile}" if self.method == "percentile" else "")
        if self.given is not None:
            origin = f"with the {len(self.given)} activation scales given ({self.source})"
        else:
            samples = sum(next(iter(b.values())).shape[0] if next(iter(b.values())).ndim else 1
                          for b in self.batches)
            origin = (f"calibrated ({method}{', power-of-two scales' * self.power_of_two}) on "
                      f"{samples} sample(s) from {self.source or 'calibration='}")
        what = ("fake-quantized for training (float weights, FakeQuantize)" if self.fake
                else "to int8 (per-channel weights, int32 bias)")
        self.detail = (f"{len(compute)} Conv/Gemm/MatMul {what}, {n_act} Relu/Clip kept before "
                       f"their QuantizeLinear, {n_pass} pass-through op(s) on int8 scales"
                       + (f"; float: {', '.join(sorted(kept_float))}" if kept_float else "")
                       + f"; {origin}")
        return PassResult(model, True)

    def _quantize_compute(self, node, act, out, stats) -> None:
        g = self.g
        w, axis = weight_layout(node)
        _, b = bias_vector(node, w.shape[axis])
        x = node.inputs[0]
        if x not in self.scales:
            self._qdq(x, self._scale_value(x, self._scale_of(x, stats)))
            x = node.inputs[0]
        if self.fake:
            self._fake_weight(node, axis)
            self._qdq(out, self._scale_value(out, self._scale_of(out, stats)))
            return
        s_x = self.scales[x].const_value.numpy().reshape(())
        prefix = node.name or node.op_type.lower()
        s_w = self._weight_scale(w, axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        w_q = np.clip(np.rint(w / s_w.reshape(shape)), -QMAX, QMAX).astype(np.int8)
        o = w.shape[axis]
        set_input(node, 1, self._dq(add_initializer(g, w_q, f"{prefix}.weight_quantized"),
                                    add_initializer(g, s_w, f"{prefix}.weight_scale"),
                                    add_initializer(g, np.zeros(o, np.int8),
                                                    f"{prefix}.weight_zero_point"), axis))
        if node.op_type == "Gemm":
            node.attributes["alpha"] = ir.AttrFloat32("alpha", 1.0)
        if b is not None:
            s_b = (s_x * s_w).astype(np.float32)
            b_q = np.clip(np.rint(b.astype(np.float64) / s_b), *_I32).astype(np.int32)
            set_input(node, 2, self._dq(add_initializer(g, b_q, f"{prefix}.bias_quantized"),
                                        add_initializer(g, s_b, f"{prefix}.bias_scale"),
                                        add_initializer(g, np.zeros(o, np.int32),
                                                        f"{prefix}.bias_zero_point"), 0))
            if node.op_type == "Gemm":
                node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        self._qdq(out, self._scale_value(out, self._scale_of(out, stats)))

    def _fake_weight(self, node: ir.Node, axis: int) -> None:
        """The float weight behind a FakeQuantize that scales it per output channel (Gemm's
        alpha stays on the node: quantizing W then scaling equals quantizing alpha*W)."""
        w = node.inputs[1]
        fq = ir.Node(HAL_DOMAIN, FAKE_QUANTIZE, [w], self._fake_attrs(-QMAX, QMAX, axis),
                     name=f"{w.name}_FakeQuantize")
        fq.outputs[0].name = f"{w.name}_fake_quantized"
        fq.outputs[0].type, fq.outputs[0].shape = ir.TensorType(ir.DataType.FLOAT), w.shape
        self.g.append(fq)
        set_input(node, 1, fq.outputs[0])

    def _fake_attrs(self, qmin: int, qmax: int, axis: int = 0) -> list:
        return [ir.AttrInt64("qmin", qmin), ir.AttrInt64("qmax", qmax), ir.AttrInt64("axis", axis),
                ir.AttrInt64("power_of_two", int(self.power_of_two))]

    def _pass_through(self, node: ir.Node, is_compute: set) -> bool:
        x, y = node.inputs[0], node.outputs[0]
        if x not in self.scales or any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            return False
        feeds = any(id(u) in is_compute or is_onnx(u, *PASS_THROUGH) for u in y.consumers())
        if not feeds:
            return False
        self._qdq(y, self.scales[x])
        return True

    # -- graph building -----------------------------------------------------------------
    def _scale_value(self, v: ir.Value, scale: np.float32) -> ir.Value:
        return add_initializer(self.g, np.array(scale, np.float32), f"{v.name}_scale")

    def _dq(self, q: ir.Value, scale: ir.Value, zp: ir.Value, axis: int | None) -> ir.Value:
        attrs = [ir.AttrInt64("axis", axis)] if axis is not None else []
        node = ir.Node("", "DequantizeLinear", [q, scale, zp], attrs,
                       name=f"{q.name}_DequantizeLinear")
        out = node.outputs[0]
        out.name = f"{q.name.removesuffix('_quantized')}_dequantized"
        out.type = ir.TensorType(ir.DataType.FLOAT)
        out.shape = q.shape
        self.g.append(node)
        return out

    def _qdq(self, v: ir.Value, scale: ir.Value) -> None:
        """Route every reader of ``v`` through QuantizeLinear -> DequantizeLinear(scale)."""
        g = self.g
        users = [(u.node, u.idx) for u in v.uses()]
        name = v.name
        if self.fake:
            fq = ir.Node(HAL_DOMAIN, FAKE_QUANTIZE, [v, scale], self._fake_attrs(-128, 127),
                         name=f"{name}_FakeQuantize")
            dv = fq.outputs[0]
            dv.name, dv.type, dv.shape = f"{name}_fake_quantized", \
                ir.TensorType(ir.DataType.FLOAT), v.shape
            g.append(fq)
            return self._route(v, dv, users, scale)
        q = ir.Node("", "QuantizeLinear", [v, scale, self.zp8], name=f"{name}_QuantizeLinear")
        qv = q.outputs[0]
        qv.name, qv.type, qv.shape = f"{name}_quantized", ir.TensorType(ir.DataType.INT8), v.shape
        g.append(q)
        dq = ir.Node("", "DequantizeLinear", [qv, scale, self.zp8],
                     name=f"{name}_DequantizeLinear")
        dv = dq.outputs[0]
        dv.name, dv.type, dv.shape = f"{name}_dequantized", ir.TensorType(ir.DataType.FLOAT), \
            v.shape
        g.append(dq)
        self._route(v, dv, users, scale)

    def _route(self, v: ir.Value, dv: ir.Value, users: list, scale: ir.Value) -> None:
        g, name = self.g, v.name
        for user, i in users:
            user.replace_input_with(i, dv)
        if v.is_graph_output():  # the graph output keeps its name and now carries int8 values
            for i, o in enumerate(g.outputs):
                if o is v:
                    g.outputs[i] = dv
            v.name, dv.name = f"{name}_float", name
        self.scales[dv] = scale


def _name_values(g: ir.Graph) -> None:
    """Give every unnamed value a name: calibration finds tensors by name."""
    taken = {v.name for v in g.inputs} | {o.name for n in g for o in n.outputs}
    k = 0
    for n in g:
        for o in n.outputs:
            if not o.name:
                while f"hal_value_{k}" in taken:
                    k += 1
                o.name = f"hal_value_{k}"
                taken.add(o.name)

