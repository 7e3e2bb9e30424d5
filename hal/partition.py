"""Capability partitioning: cut a graph into per-device segments.

Nodes are visited in topological order; consecutive nodes placed on the same
device form a segment. A node the asked-for device cannot run goes to the
fallback device (or raises UnsupportedOp in strict mode). A supported island
of only cheap ops between fallback segments is not worth two transfers, so it
stays on the fallback device.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
import onnx_ir as ir

from hal.backend import Device
from hal.errors import UnsupportedOp
from hal.ir import shapes as S
from hal.ir.model import IR_VERSION

#: Ops whose cost justifies moving data to an accelerator.
HEAVY_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger",
                       "QLinearConv", "QLinearMatMul", "LSTM", "GRU", "RNN", "Attention",
                       "Einsum"})


@dataclass
class Fallback:
    node: str
    op: str
    reason: str
    device: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "reason": self.reason, "device": self.device}


@dataclass
class Segment:
    index: int
    device: Device
    node_indices: list[int]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)
    output_shapes: list = field(default_factory=list)  # inferred, checked at run time


def _supports(device: Device, node: ir.Node) -> bool | str:
    try:
        ok = device.backend.supports(node, device.info)
    except Exception as exc:  # a plugin's supports() must not break compilation
        return f"supports() raised {type(exc).__name__}: {exc}"
    return True if ok is True else (ok or f"{device.backend.name} does not support it")


def place(graph: ir.Graph, primary: Device, fallback: Device | None,
          candidates: list[Device]) -> tuple[list[Device], list[Fallback]]:
    """The device of each node (graph order) and the fallbacks taken."""
    nodes = list(graph)
    where: list[Device] = []
    fallbacks: list[Fallback] = []
    for node in nodes:
        ok = _supports(primary, node)
        if ok is True:
            where.append(primary)
            continue
        if fallback is None or fallback is primary or _supports(fallback, node) is not True:
            able = [d.string for d in candidates if _supports(d, node) is True]
            mode = ("strict fallback (fallback=None)" if fallback is None else
                    f"the fallback {fallback.string} cannot run it either")
            raise UnsupportedOp(
                f"{primary.string} cannot run node {node.name!r} (op {node.op_type}): {ok}; "
                f"{mode}. Devices that can run it: {', '.join(able) or 'none'}. "
                + ("Pass fallback='cpu' to run it there." if fallback is None and able else ""))
        where.append(fallback)
        fallbacks.append(Fallback(node.name, node.op_type, str(ok), fallback.string))
    if fallback is not None and fallbacks:
        _merge_cheap_islands(nodes, where, primary, fallback)
    return where, fallbacks


def _merge_cheap_islands(nodes, where, primary, fallback) -> None:
    i = 0
    while i < len(nodes):
        if where[i] is not primary:
            i += 1
            continue
        j = i
        while j < len(nodes) and where[j] is primary:
            j += 1
        run = range(i, j)
        cheap = not any(nodes[k].op_type in HEAVY_OPS for k in run)
        if cheap and all(_supports(fallback, nodes[k]) is True for k in run):
            for k in run:
                where[k] = fallback
        i = j


def segments(graph: ir.Graph, where: list[Device]) -> list[Segment]:
    nodes = list(graph)
    segs: list[Segment] = []
    for i, dev in enumerate(where):
        if not segs or segs[-1].device is not dev:
            segs.append(Segment(len(segs), dev, []))
        segs[-1].node_indices.append(i)
        segs[-1].ops[nodes[i].op_type] += 1
    produced_in: dict[str, int] = {}
    for s in segs:
        for i in s.node_indices:
            for v in nodes[i].outputs:
                produced_in[v.name] = s.index
    consumers: dict[str, set[int]] = {}
    inits = set(graph.initializers)
    for s in segs:
        seen = set()
        for i in s.node_indices:
            for v in nodes[i].inputs:
                if v is None or not v.name or v.name in inits or v.const_value is not None:
                    continue
                if produced_in.get(v.name) != s.index and v.name not in seen:
                    seen.add(v.name)
                    s.inputs.append(v.name)
                    consumers.setdefault(v.name, set()).add(s.index)
    graph_outputs = [v.name for v in graph.outputs]
    for s in segs:
        for i in s.node_indices:
            for v in nodes[i].outputs:
                if not v.name:
                    continue
                used_later = any(c != s.index for c in consumers.get(v.name, ()))
                if used_later or v.name in graph_outputs:
                    s.outputs.append(v.name)
    return segs


def segment_model(proto: onnx.ModelProto, info: dict, seg: Segment, name: str) -> onnx.ModelProto:
    """A self-contained ModelProto holding just ``seg``'s nodes and the weights they use."""
    g = proto.graph
    nodes = [g.node[i] for i in seg.node_indices]
    used = {n for node in nodes for n in node.input}
    inits = [t for t in g.initializer if t.name in used]

    def vi(name: str) -> onnx.ValueInfoProto:
        shape, dtype = info.get(name, (None, None))
        elem = onnx.helper.np_dtype_to_tensor_dtype(dtype) if dtype is not None \
            else onnx.TensorProto.FLOAT
        dims = None if shape is None else [d if d is not None else "?" for d in shape]
        return onnx.helper.make_tensor_value_info(name, elem, dims)

    graph = onnx.helper.make_graph(nodes, f"{name}.segment{seg.index}",
                                   [vi(n) for n in seg.inputs], [vi(n) for n in seg.outputs],
                                   initializer=inits)
    m = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import),
                               ir_version=IR_VERSION)
    return m


def shape_info(proto: onnx.ModelProto) -> dict:
    return S.infer(proto)
