"""Finding the accelerator's layers in a QDQ graph (the int8 form of QDQ.md).

One accelerator layer is the chain

    DQ(x_q) ─┐
    DQ(W_q) ─┼─ Conv | Gemm | MatMul ─ [Relu | Clip] ─ Q(s_y) [─ DQ ─ MaxPool(k, stride k) ─ Q(s_y)]
    DQ(B_q) ─┘

with int8 activations and weights, an int32 bias, symmetric (zero) zero points, per-tensor
activation scales and per-output-channel weight scales. ``analyse`` returns each such chain
with everything the accelerator needs (int8 weights, int32 bias, per-channel multiplier and
shift from the scales through ``spec.quantize_multiplier``), or for each op it refuses the
reason, so that the backend's ``claim`` can say why a node runs on the CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import onnx_ir as ir

from hal.ir.graph import const, sole_consumer
from hal.ir.schemas import is_onnx
from hal.ir.attributes import attribute

from . import spec
from .files import accelerator_dir

OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class Layer:
    """One accelerator layer: its nodes in the graph and the integer parameters."""

    op: str  # "conv" or "gemm"
    nodes: list  # ir.Node, in chain order: input DQs, the op, activation, Q, pool chain
    x: str  # the int8 tensor read (the input of the first DQ)
    y: str  # the int8 tensor written (the output of the last Q)
    w: np.ndarray  # int8 OIHW (conv) or [O, K] (gemm)
    bias: np.ndarray  # int32 [O]
    m: np.ndarray  # int32 [O]
    s: np.ndarray  # int32 [O]
    stride: int = 1
    pad: int = 0
    groups: int = 1
    act_min: int = spec.INT8_MIN
    act_max: int = spec.INT8_MAX
    pool: int = 0
    in_shape: tuple = ()  # (C, H, W) or (K,): the static part of the input shape
    names: dict = field(default_factory=dict)  # node names, for reports

    @property
    def out_channels(self) -> int:
        return int(self.w.shape[0])

    def sizes(self) -> tuple:
        """(op, c, h, wd, o, kh, kw, stride, pad, groups, pool): what ``check_limits`` takes."""
        if self.op == "conv":
            (c, h, wd), (kh, kw) = self.in_shape, self.w.shape[2:]
        else:
            (c,), h, wd, kh, kw = self.in_shape, 1, 1, 1, 1
        return (self.op, c, h, wd, self.out_channels, kh, kw, self.stride, self.pad,
                self.groups, self.pool)

    def describe(self) -> str:
        if self.op == "gemm":
            return f"gemm {self.in_shape[0]}→{self.out_channels}"
        o, _, kh, kw = self.w.shape
        extra = "".join([f" s{self.stride}" * (self.stride > 1), f" p{self.pad}" * bool(self.pad),
                         f" g{self.groups}" * (self.groups > 1),
                         f" +pool{self.pool}" * (self.pool > 1)])
        return f"conv {self.in_shape[0]}→{o} {kh}×{kw}{extra}"


class Refused(Exception):
    """A node that looks like a layer but is not one the accelerator runs (the message says why)."""


# -- the accelerator's limits --------------------------------------------------------------

@cache
def limits() -> dict[str, int]:
    """PE array and on-chip buffer sizes of hal_int8, read from the kernels' shared header."""
    text = (accelerator_dir() / "hls" / "hal_int8_params.h").read_text()
    found = {k.lower(): int(v) for k, v in
             re.findall(r"^#define HAL_(PE_OUT|PE_IN|MAX_XBUF|MAX_WK|MAX_OW|MAX_K)\s+(\d+)",
                        text, re.MULTILINE)}
    missing = {"pe_out", "pe_in", "max_xbuf", "max_wk", "max_ow", "max_k"} - set(found)
    if missing:
        raise RuntimeError(f"hal_int8_params.h defines no {sorted(missing)}")
    return found


def check_limits(op: str, c: int, h: int, wd: int, o: int, kh: int, kw: int, stride: int,
                 pad: int, groups: int, pool: int) -> str | None:
    """None if hal_int8 can run the layer, else why not (the kernel's own checks, beforehand)."""
    lim = limits()
    if op == "gemm":
        h = wd = kh = kw = stride = groups = 1
        pad = pool = 0
    if c % groups or o % groups:
        return f"groups={groups} do not divide {c} input / {o} output channels"
    pk = max(pool, 1)
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    if oh < pk or ow < pk:
        return f"the output {oh}×{ow} is smaller than the pool window {pk}"
    cg, og = c // groups, o // groups
    kk = cg * kh * kw
    span = (lim["pe_out"] - 1) // og + 2
    xbuf = kh * (wd + 2 * pad) * cg * min(span, groups)
    for what, have, cap in (("products per output (C/groups·kh·kw)", kk, lim["max_k"]),
                            ("weights per output channel", kk, lim["max_wk"]),
                            ("pooled output width", ow // pk, lim["max_ow"]),
                            ("input line buffer bytes", xbuf, lim["max_xbuf"])):
        if have > cap:
            return f"{what} {have} exceed the accelerator's {cap}"
    return None


# -- matching ------------------------------------------------------------------------------

def _producer(v: ir.Value | None, op: str) -> ir.Node | None:
    p = v.producer() if v is not None else None
    return p if p is not None and is_onnx(p, op) else None


def _zero_point(node: ir.Node, dtype: ir.DataType, what: str) -> None:
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    arr = const(zp)
    if zp is None or arr is None:
        raise Refused(f"{what}: {node.op_type} {node.name!r} needs a constant zero point of type "
                      f"{dtype.name.lower()}")
    if zp.dtype != dtype or np.any(arr != 0):
        raise Refused(f"{what}: {node.op_type} {node.name!r} has a non-zero or "
                      f"{zp.dtype.name.lower() if zp.dtype else '?'} zero point; the accelerator "
                      f"is symmetric ({dtype.name.lower()} zeros)")


def _scale(node: ir.Node, what: str, size: int | None = None) -> np.ndarray:
    s = const(node.inputs[1])
    if s is None or s.dtype != np.float32 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise Refused(f"{what}: {node.op_type} {node.name!r} needs a constant positive float32 "
                      f"scale")
    if size is None:
        if s.size != 1:
            raise Refused(f"{what}: {node.op_type} {node.name!r} has a per-channel scale; "
                          f"activations are quantized per tensor")
        return s.reshape(())
    if s.size not in (1, size):
        raise Refused(f"{what}: {node.op_type} {node.name!r} scale has {s.size} entries, "
                      f"expected 1 or {size}")
    return np.broadcast_to(s.reshape(-1), (size,))


def _dq_activation(v: ir.Value, what: str) -> tuple[ir.Node, np.ndarray]:
    dq = _producer(v, "DequantizeLinear")
    if dq is None:
        raise Refused(f"{what} is not dequantized from int8 (quantize the model: "
                      f"precision='int8')")
    if dq.inputs[0].dtype != ir.DataType.INT8:
        raise Refused(f"{what}: {dq.name!r} dequantizes {dq.inputs[0].dtype}, not int8")
    _zero_point(dq, ir.DataType.INT8, what)
    s = _scale(dq, what)
    if sole_consumer(dq.outputs[0]) is None:
        raise Refused(f"{what}: the dequantized tensor {dq.outputs[0].name!r} feeds other nodes "
                      f"too; the accelerator reads int8 only")
    return dq, s


def _dq_const(v: ir.Value, dtype: ir.DataType, axis: int, size: int, what: str
              ) -> tuple[ir.Node, np.ndarray, np.ndarray]:
    dq = _producer(v, "DequantizeLinear")
    arr = const(dq.inputs[0]) if dq is not None else None
    if dq is None or arr is None or dq.inputs[0].dtype != dtype:
        raise Refused(f"{what} is not a constant {dtype.name.lower()} tensor behind "
                      f"DequantizeLinear")
    _zero_point(dq, dtype, what)
    s = _scale(dq, what, size)
    if const(dq.inputs[1]).size > 1 and attribute(dq, "axis", 1) % arr.ndim != axis:
        raise Refused(f"{what}: per-channel scale on axis {attribute(dq, 'axis', 1)}, expected the "
                      f"output-channel axis {axis}")
    if attribute(dq, "block_size", 0):
        raise Refused(f"{what}: blocked quantization is not supported")
    if sole_consumer(dq.outputs[0]) is None:
        raise Refused(f"{what}: the dequantized constant feeds other nodes too")
    return dq, arr, s


def _static(v: ir.Value, rank: int, what: str) -> tuple[int, ...]:
    shape = v.shape
    if shape is None or len(shape) != rank or not all(isinstance(d, int) for d in shape[1:]):
        raise Refused(f"{what}: needs a rank-{rank} input with static sizes after the batch, got "
                      f"{None if shape is None else list(shape)}")
    return tuple(int(d) for d in shape[1:])


def _output_chain(op: ir.Node, what: str) -> tuple[list, int, int, ir.Node, np.ndarray]:
    """The op's activation and output Q: (nodes, act_min, act_max, q node, s_y)."""
    nodes = []
    nxt = sole_consumer(op.outputs[0])
    act = None
    if nxt is not None and (is_onnx(nxt, "Relu") or is_onnx(nxt, "Clip")):
        act, nxt = nxt, sole_consumer(nxt.outputs[0])
        nodes.append(act)
    if nxt is None or not is_onnx(nxt, "QuantizeLinear"):
        raise Refused(f"{what}: its result is not requantized by a sole QuantizeLinear (the "
                      f"accelerator writes int8)")
    q = nxt
    if q.outputs[0].dtype != ir.DataType.INT8 or len(q.inputs) < 3:
        raise Refused(f"{what}: {q.name!r} must quantize to int8 with an explicit zero point")
    _zero_point(q, ir.DataType.INT8, what)
    s_y = _scale(q, what)
    if attribute(q, "saturate", 1) != 1 or attribute(q, "block_size", 0):
        raise Refused(f"{what}: {q.name!r} uses attributes the accelerator does not implement")
    act_min, act_max = spec.INT8_MIN, spec.INT8_MAX
    if act is not None and act.op_type == "Relu":
        act_min = 0
    elif act is not None:
        lo = const(act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1] is not None else None
        hi = const(act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2] is not None else None
        given = [v for v in act.inputs[1:] if v is not None]
        if any(const(v) is None for v in given):
            raise Refused(f"{what}: Clip {act.name!r} bounds must be constants")
        # rounding is monotone, so clamping before or after quantization agrees; bounds and
        # a per-tensor scale may come as shape [1] rather than scalars
        scale = _one(s_y, f"{what}: output scale")
        if lo is not None:
            act_min = max(act_min, int(np.rint(_one(lo, f"{what}: Clip min") / scale)))
        if hi is not None:
            act_max = min(act_max, int(np.rint(_one(hi, f"{what}: Clip max") / scale)))
    return nodes + [q], act_min, act_max, q, s_y


def _one(value, what: str) -> float:
    v = np.asarray(value, np.float64).reshape(-1)
    if v.size != 1:
        raise Refused(f"{what} must be a single value, got shape {np.shape(value)}")
    return float(v[0])


def _pool_chain(q: ir.Node, s_y: np.ndarray) -> tuple[list, int, ir.Node]:
    """A following DQ -> MaxPool(k, stride k) -> Q at the same scale: (nodes, k, last Q)."""
    dq = sole_consumer(q.outputs[0])
    if dq is None or not is_onnx(dq, "DequantizeLinear"):
        return [], 0, q
    pool = sole_consumer(dq.outputs[0])
    if pool is None or not is_onnx(pool, "MaxPool") or len(pool.outputs) > 1:
        return [], 0, q
    q2 = sole_consumer(pool.outputs[0])
    if q2 is None or not is_onnx(q2, "QuantizeLinear") or len(q2.inputs) < 3:
        return [], 0, q
    try:
        _zero_point(dq, ir.DataType.INT8, "pool")
        _zero_point(q2, ir.DataType.INT8, "pool")
        same = _scale(dq, "pool") == s_y and _scale(q2, "pool") == s_y
    except Refused:
        return [], 0, q
    k = list(attribute(pool, "kernel_shape", ()))
    ok = (same and len(k) == 2 and k[0] == k[1] and k[0] > 1
          and list(attribute(pool, "strides", k)) == k
          and not any(attribute(pool, "pads", (0, 0, 0, 0)))
          and all(d == 1 for d in attribute(pool, "dilations", (1, 1)))
          and attribute(pool, "auto_pad", "NOTSET") in ("NOTSET", "VALID")
          and not attribute(pool, "ceil_mode", 0) and not attribute(pool, "storage_order", 0)
          and q2.outputs[0].dtype == ir.DataType.INT8)
    return ([dq, pool, q2], int(k[0]), q2) if ok else ([], 0, q)


def _conv(node: ir.Node, what: str):
    x_shape = _static(node.inputs[0], 4, what)
    dqw, w, s_w = None, None, None
    wv = node.inputs[1]
    if wv is None or wv.shape is None or len(wv.shape) != 4:
        raise Refused(f"{what}: only 2-D convolutions run on the accelerator")
    o = int(wv.shape[0])
    dqw, w, s_w = _dq_const(wv, ir.DataType.INT8, 0, o, f"{what} weight")
    kh, kw = w.shape[2:]
    strides = list(attribute(node, "strides", (1, 1)))
    pads = list(attribute(node, "pads", (0, 0, 0, 0)))
    if attribute(node, "auto_pad", "NOTSET") not in ("NOTSET",):
        raise Refused(f"{what}: auto_pad is not supported (the flow's cleanup makes pads explicit)")
    if any(d != 1 for d in attribute(node, "dilations", (1, 1))):
        raise Refused(f"{what}: dilated convolutions are not supported")
    if strides[0] != strides[1]:
        raise Refused(f"{what}: strides {strides} differ per axis")
    if len(set(pads)) != 1:
        raise Refused(f"{what}: pads {pads} are not the same on every side")
    groups = int(attribute(node, "group", 1))
    return {"op": "conv", "w": np.ascontiguousarray(w), "s_w": s_w, "dqw": dqw,
            "stride": int(strides[0]), "pad": int(pads[0]), "groups": groups, "in_shape": x_shape,
            "kh": int(kh), "kw": int(kw)}


def _gemm(node: ir.Node, what: str):
    x_shape = _static(node.inputs[0], 2, what)
    wv = node.inputs[1]
    if wv is None or wv.shape is None or len(wv.shape) != 2:
        raise Refused(f"{what}: the weight must be a 2-D constant")
    if node.op_type == "Gemm":
        if attribute(node, "transA", 0) or attribute(node, "alpha", 1.0) != 1.0 or \
                (len(node.inputs) > 2 and node.inputs[2] is not None
                 and attribute(node, "beta", 1.0) != 1.0):
            raise Refused(f"{what}: transA, alpha and beta must keep their defaults")
        trans_b = bool(attribute(node, "transB", 0))
    else:
        trans_b = False
    o = int(wv.shape[0] if trans_b else wv.shape[1])
    dqw, w, s_w = _dq_const(wv, ir.DataType.INT8, 0 if trans_b else 1, o, f"{what} weight")
    w = w if trans_b else w.T
    return {"op": "gemm", "w": np.ascontiguousarray(w), "s_w": s_w, "dqw": dqw, "stride": 1,
            "pad": 0, "groups": 1, "in_shape": x_shape, "kh": 1, "kw": 1}


def match(node: ir.Node) -> Layer:
    """The accelerator layer whose op is ``node``; Refused saying why it is not one."""
    what = f"{node.op_type} {node.name!r}"
    dqx, s_x = _dq_activation(node.inputs[0], f"{what} input")
    p = _conv(node, what) if node.op_type == "Conv" else _gemm(node, what)
    o = p["w"].shape[0]
    nodes = [dqx, p["dqw"]]
    bias = np.zeros(o, np.int32)
    bv = node.inputs[2] if len(node.inputs) > 2 else None
    if bv is not None:
        dqb, b, s_b = _dq_const(bv, ir.DataType.INT32, 0, o, f"{what} bias")
        if b.size != o:
            raise Refused(f"{what}: bias has {b.size} entries for {o} output channels")
        want = s_x.astype(np.float32) * p["s_w"].astype(np.float32)
        if not np.allclose(s_b, want, rtol=1e-5, atol=0):
            raise Refused(f"{what}: the bias scale is not input scale × weight scale")
        bias = np.ascontiguousarray(b.reshape(-1), np.int32)
        nodes.append(dqb)
    tail, act_min, act_max, q, s_y = _output_chain(node, what)
    pool_nodes, pool, last = ([], 0, q) if p["op"] == "gemm" else _pool_chain(q, s_y)
    try:
        ms = [spec.quantize_multiplier(float(np.float64(s_x) * np.float64(sw) / np.float64(s_y)))
              for sw in p["s_w"]]
    except ValueError as exc:
        raise Refused(f"{what}: {exc}") from None
    if act_min > act_max:
        raise Refused(f"{what}: the activation range {act_min}..{act_max} is empty")
    if p["op"] == "conv":
        c, h, wd = p["in_shape"]
    else:
        (c,), h, wd = p["in_shape"], 1, 1
    if p["op"] == "conv" and p["w"].shape[1] * p["groups"] != c:
        raise Refused(f"{what}: weight {list(p['w'].shape)} does not fit {c} input channels")
    if p["op"] == "gemm" and p["w"].shape[1] != c:
        raise Refused(f"{what}: weight {list(p['w'].shape)} does not fit K={c}")
    why = check_limits(p["op"], c, h, wd, o, p["kh"], p["kw"], p["stride"], p["pad"],
                       p["groups"], pool)
    if why:
        raise Refused(f"{what}: {why}")
    nodes = nodes + [node] + tail + pool_nodes
    return Layer(op=p["op"], nodes=nodes, x=dqx.inputs[0].name, y=last.outputs[0].name,
                 w=p["w"], bias=bias, m=np.array([m for m, _ in ms], np.int32),
                 s=np.array([s for _, s in ms], np.int32), stride=p["stride"], pad=p["pad"],
                 groups=p["groups"], act_min=act_min, act_max=act_max, pool=pool,
                 in_shape=tuple(p["in_shape"]),
                 names={"op": node.name, "output": last.outputs[0].name})


@dataclass
class View:
    """DQ -> Flatten -> Q at one scale and zero point: on int8 data that is the same bytes
    under another shape (Q(DQ(x)) == x exactly), so the accelerator's buffer is passed on as
    it is, with no start and no copy, and the layers either side stay in one segment."""

    nodes: list  # the DQ, the Flatten, the Q
    x: str
    y: str
    in_shape: tuple  # the static part of the input shape
    names: dict = field(default_factory=dict)

    op = "view"

    @property
    def out_shape(self) -> tuple:
        return (int(np.prod(self.in_shape)),)

    def describe(self) -> str:
        return f"flatten {'×'.join(map(str, self.in_shape))}→{self.out_shape[0]} (a view)"


def match_view(node: ir.Node) -> View | None:
    """The view around Flatten ``node``, or None when it is not one."""
    if not is_onnx(node, "Flatten") or attribute(node, "axis", 1) != 1:
        return None
    dq = _producer(node.inputs[0], "DequantizeLinear")
    q = sole_consumer(node.outputs[0])
    if dq is None or q is None or not is_onnx(q, "QuantizeLinear") or len(q.inputs) < 3:
        return None
    shape = dq.inputs[0].shape
    try:
        _zero_point(dq, ir.DataType.INT8, "view")
        _zero_point(q, ir.DataType.INT8, "view")
        same = _scale(dq, "view") == _scale(q, "view")
    except Refused:
        return None
    if not (same and dq.inputs[0].dtype == ir.DataType.INT8
            and q.outputs[0].dtype == ir.DataType.INT8 and sole_consumer(dq.outputs[0]) is node
            and attribute(q, "saturate", 1) == 1 and not attribute(q, "block_size", 0)
            and shape is not None and len(shape) >= 2
            and all(isinstance(d, int) for d in shape[1:])):
        return None
    return View(nodes=[dq, node, q], x=dq.inputs[0].name, y=q.outputs[0].name,
                in_shape=tuple(int(d) for d in shape[1:]),
                names={"op": node.name, "output": q.outputs[0].name})


@dataclass
class Analysis:
    layers: list  # Layer, in graph order
    owner: dict  # id(node) -> Layer or View
    refused: dict  # id(op node) -> reason
    steps: list = field(default_factory=list)  # layers and views, in graph order


def analyse(graph: ir.Graph) -> Analysis:
    layers, owner, refused = [], {}, {}
    order = {id(n): i for i, n in enumerate(graph)}
    for node in graph:
        if not is_onnx(node, *OPS):
            continue
        try:
            layer = match(node)
        except Refused as exc:
            refused[id(node)] = str(exc)
            continue
        if any(id(n) in owner for n in layer.nodes):
            refused[id(node)] = f"{node.op_type} {node.name!r} shares nodes with another layer"
            continue
        layers.append(layer)
        owner.update({id(n): layer for n in layer.nodes})
    # a view only where it joins accelerator layers: alone it would add copies, not save them
    ends = {layer.y for layer in layers} | {layer.x for layer in layers}
    views = [v for v in map(match_view, graph) if v is not None and (v.x in ends or v.y in ends)
             and not any(id(n) in owner for n in v.nodes)]
    for v in views:
        owner.update({id(n): v for n in v.nodes})
    steps = sorted(layers + views, key=lambda s: order[id(anchor(s))])
    return Analysis(layers, owner, refused, steps)


def anchor(step: Layer | View) -> ir.Node:
    """The node a layer or view is built around: its Conv/Gemm/MatMul, or the Flatten."""
    return step.nodes[1] if step.op == "view" else next(n for n in step.nodes
                                                        if n.op_type in OPS)
