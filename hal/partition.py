"""Capability partitioning: cut a graph into per-device segments.

The asked-for device and the fallback each claim, once over the whole graph, the groups of
nodes they run (``Backend.claim``). A claimed group is one unit: where its nodes lie apart in
the graph they are moved together, the order staying topological. A node the asked-for device
refuses goes to the fallback device with the reason (or raises UnsupportedOp in strict mode).
Consecutive nodes on the same device form a segment. A run of only cheap ops between fallback
segments is not worth two transfers, so it stays on the fallback device.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import onnx
import onnx_ir as ir

from hal.backend import Claim, Device
from hal.errors import BackendError, UnsupportedOp
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


@dataclass
class Claims:
    """One device's claim over a graph, by node: its group (a list shared by the group's
    nodes) and None or why the device refuses it."""

    device: Device
    group: dict[int, list]  # id(node) -> the claimed group holding it
    refused: dict[int, str]  # id(node) -> why not

    def runs(self, node: ir.Node) -> bool:
        return id(node) in self.group


def claims(device: Device, graph: ir.Graph) -> Claims:
    """``device``'s claim over ``graph``. A claim() that raises or names nodes outside the
    graph, or one node twice, refuses every node with the backend's name and the defect: a
    plugin's fault must not break compilation."""
    name = device.backend.name
    nodes = list(graph)
    try:
        answer = list(device.backend.claim(graph, device.info))
        defect = _defect(answer, nodes)
    except Exception as exc:  # noqa: BLE001 - isolate the plugin, say what it raised
        defect = f"raised {type(exc).__name__}: {exc}"
    if defect:
        why = f"claim() of backend {name!r} {defect}"
        return Claims(device, {}, {id(n): why for n in nodes})
    group, refused = {}, {id(n): f"{name} does not claim it" for n in nodes}
    for c in answer:
        for n in c.nodes:
            del refused[id(n)]
            if c.reason is None:
                group[id(n)] = c.nodes
            else:
                refused[id(n)] = str(c.reason) or f"{name} refuses it"
    return Claims(device, group, refused)


def _defect(answer: list, nodes: list[ir.Node]) -> str | None:
    known, seen = {id(n) for n in nodes}, set()
    for c in answer:
        if not isinstance(c, Claim):
            return f"returned a {type(c).__name__}, not a hal.backend.Claim"
        for n in c.nodes:
            if id(n) not in known:
                return f"claims {_node(n)}, which is not in the graph it was given"
            if id(n) in seen:
                return f"claims {_node(n)} twice"
            seen.add(id(n))
    return None


def _node(n) -> str:
    return f"node {getattr(n, 'name', n)!r} (op {getattr(n, 'op_type', '?')})"


def place(graph: ir.Graph, primary: Device, fallback: Device | None,
          candidates: list[Device] | Callable[[], list[Device]]) \
        -> tuple[list[Device], list[Fallback]]:
    """The device of each node and the fallbacks taken. Moves the nodes of each claimed group
    together in ``graph`` first, so the result follows the graph's new order. ``candidates``
    (or a function returning them, called only then): the devices an UnsupportedOp names as
    able to run a node no device here runs."""
    own = claims(primary, graph)
    other = None  # asked only when the device refuses something
    if fallback is not None and fallback is not primary and len(own.group) < len(graph):
        other = claims(fallback, graph)
    for node in graph:
        if not own.runs(node) and (other is None or not other.runs(node)):
            raise _unsupported(graph, node, own, other, fallback, candidates)
    units = [(primary, g) for g in _groups(graph, own, lambda n: True)]
    if other is not None:  # the fallback's groups, as far as they land on it
        units += [(fallback, g) for g in _groups(graph, other, lambda n: not own.runs(n))]
    _keep_together(graph, units)
    nodes = list(graph)
    where = [primary if own.runs(n) else fallback for n in nodes]
    fallbacks = [Fallback(n.name, n.op_type, own.refused[id(n)], fallback.string)
                 for n in nodes if not own.runs(n)]
    if fallbacks:
        _merge_cheap_islands(nodes, where, primary, fallback, other)
    return where, fallbacks


def _unsupported(graph, node, own: Claims, other: Claims | None, fallback: Device | None,
                 candidates: list[Device] | Callable[[], list[Device]]) -> UnsupportedOp:
    primary = own.device
    if callable(candidates):
        candidates = candidates()
    able = [d.string for d in candidates if d is not primary and claims(d, graph).runs(node)]
    mode = ("strict fallback (fallback=None)" if fallback is None else
            f"the fallback {fallback.string} cannot run it either"
            + (f" ({other.refused[id(node)]})" if other is not None else ""))
    return UnsupportedOp(
        f"{primary.string} cannot run node {node.name!r} (op {node.op_type}): "
        f"{own.refused[id(node)]}; {mode}. Devices that can run it: {', '.join(able) or 'none'}. "
        + ("Pass fallback='cpu' to run it there." if fallback is None and able else ""))


def _groups(graph: ir.Graph, c: Claims, keep) -> list[list[ir.Node]]:
    """``c``'s groups of more than one node, each cut down to the nodes ``keep`` accepts."""
    out, seen = [], set()
    for node in graph:
        g = c.group.get(id(node))
        if g is not None and id(g) not in seen:
            seen.add(id(g))
            kept = [n for n in g if keep(n)]
            if len(kept) > 1:
                out.append(kept)
    return out


def _keep_together(graph: ir.Graph, units: list[tuple[Device, list[ir.Node]]]) -> None:
    """Reorder ``graph`` so the nodes of each unit are consecutive, the order staying
    topological: a unit moves up to its first node's place as soon as what it reads is
    computed, the rest keep their order. A unit that cannot be consecutive (a path leaves it
    and comes back) raises BackendError naming the backend that claimed it."""
    nodes = list(graph)
    pos = {id(n): i for i, n in enumerate(nodes)}
    spans = [(dev, sorted(g, key=lambda n: pos[id(n)])) for dev, g in units]
    if all(pos[id(g[-1])] - pos[id(g[0])] == len(g) - 1 for _, g in spans):
        return
    preds = {id(n): {id(p) for p in _producers(n, pos)} for n in nodes}
    users: dict[int, list[int]] = {id(n): [] for n in nodes}
    for n in nodes:
        for p in preds[id(n)]:
            users[p].append(id(n))
    first = {id(n): pos[id(n)] for n in nodes}  # node -> its unit, named by its first position
    for dev, g in spans:
        _check_convex(dev, g, users)
        first.update({id(n): pos[id(g[0])] for n in g})
    members: dict[int, list[ir.Node]] = {}
    for n in nodes:
        members.setdefault(first[id(n)], []).append(n)
    waits = {u: {first[p] for n in ms for p in preds[id(n)]} - {u} for u, ms in members.items()}
    ready = [u for u, w in waits.items() if not w]
    heapq.heapify(ready)
    order: list[ir.Node] = []
    while ready:
        u = heapq.heappop(ready)
        order += members[u]
        for v in {first[c] for n in members[u] for c in users[id(n)]} - {u}:
            waits[v].discard(u)
            if not waits[v]:
                heapq.heappush(ready, v)
    graph.remove(nodes)
    graph.extend(order)


def _check_convex(dev: Device, group: list[ir.Node], users: dict[int, list[int]]) -> None:
    inside = {id(n) for n in group}
    names = {id(n): n.name for n in group}
    stack = [u for n in group for u in users[id(n)] if u not in inside]
    seen = set(stack)
    while stack:
        for u in users[stack.pop()]:
            if u in inside:
                raise BackendError(
                    f"backend {dev.backend.name!r} claims nodes {[n.name for n in group]} as one "
                    f"group on {dev.string}, but they cannot run as one unit: a path leaves the "
                    f"group and comes back to {names[u]!r}. The backend's claim() must split "
                    f"such a group (report it to the backend's authors)")
            if u not in seen:
                seen.add(u)
                stack.append(u)


def _producers(node: ir.Node, pos: dict[int, int]) -> list[ir.Node]:
    """The graph's nodes whose values ``node`` reads, in its inputs or inside its subgraphs."""
    out = []
    for v in _reads(node):
        p = v.producer()
        if p is not None and id(p) in pos and p is not node:
            out.append(p)
    return out


def _reads(node: ir.Node):
    yield from (v for v in node.inputs if v is not None)
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            graphs = [attr.value]
        elif attr.type == ir.AttributeType.GRAPHS:
            graphs = attr.value
        else:
            continue
        for g in graphs:
            for inner in g:
                yield from _reads(inner)


def _merge_cheap_islands(nodes, where, primary, fallback, other: Claims | None) -> None:
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
        if cheap and other is not None and all(other.runs(nodes[k]) for k in run):
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
