"""Channel dependency analysis: which channels of a graph must be removed together, and what
removing them touches.

A *group* is a set of channels that is removed as one: the output channels of a Conv, Gemm or
MatMul with a constant weight (its *producer*), joined with every other producer whose channels
meet them elementwise (both branches of a residual ``Add``, the inputs of a ``Mul``). The
analysis walks the graph once in order and follows each tracked axis of every value:

- elementwise ops (Relu, Clip, Sigmoid, Gelu, Dropout, Cast, ...) and pooling keep it;
  BatchNormalization keeps it and its four parameters follow the channels;
- ``Add``/``Mul``/... join the groups of their inputs (broadcast-aware), and a constant operand
  with a channel axis (a bias) follows the channels;
- a depthwise Conv (``group`` = channels, one filter each) keeps its input's group: its filters,
  bias and ``group`` follow; a grouped Conv (1 < group < channels) is left alone;
- ``Concat`` along the channel axis puts its inputs' channels at their offsets;
- ``Flatten``/``Reshape`` that merges the channel axis with the axes after it (``[N, C, H, W] ->
  [N, C*H*W]``) maps a channel to ``H*W`` consecutive features; a ``Reshape`` that splits it
  (``[N, T, C] -> [N, T, heads, C/heads]``) makes whole heads the unit of removal;
  ``Transpose``, ``Squeeze``/``Unsqueeze``, ``Slice``/``Split`` of other axes move it;
- a consumer (Conv, Gemm, MatMul with a constant weight) slices its weight's input axis.

Anything else is left alone and says why: an op the analysis does not know reading a tracked
value, a Softmax/LayerNormalization/Reduce over the channels, a Reshape it cannot follow, a
runtime (non-constant) operand that would need slicing, a value that is a model output (the
outputs keep their shape), a channel axis added to the model's input (the inputs keep theirs).
Unknown means left alone, never guessed.

The result (``analyze``) records every initializer axis, Reshape shape entry and depthwise
``group`` that follows each group; ``hal.passes.prune_channels`` scores, selects and slices.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from fractions import Fraction
from math import lcm, prod
from typing import Sequence

import numpy as np
import onnx_ir as ir

from hal.ir import shapes as S
from hal.ir.attributes import attribute
from hal.ir.graph import const
from hal.ir.schemas import FUSED_BASE, HAL_DOMAIN, ONNX_DOMAINS

#: elementwise ops of one tensor (their extra inputs, if any, are scalars): channels pass
UNARY = frozenset({
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Gelu", "Softplus", "Softsign", "Mish", "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt",
    "Reciprocal", "Floor", "Ceil", "Round", "Sign", "ThresholdedRelu", "Identity", "Cast",
    "Dropout", "Clip", "Sin", "Cos", "Not", "IsNaN", "IsInf", "Shrink"})
#: elementwise ops of several broadcast tensors: their inputs' channels meet
BROADCAST = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu",
                       "Where", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual",
                       "And", "Or", "Xor", "Mod"})
#: pooling: the batch and channel axes pass, the spatial ones are reduced or windowed
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                   "GlobalLpPool"})
REDUCE = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                    "ReduceSumSquare"})
#: what an initializer axis that follows a group is to its node (``Edit.kind``); the first four
#: are the removed channels' *producing* tensors: zeroing them zeroes the channel
PRODUCING = ("weight_out", "bias", "bn_scale", "bn_bias", "scale")
KINDS = PRODUCING + ("bn_stat", "weight_in", "param")


@dataclass(frozen=True)
class Segment:
    """A run of ``length`` positions along a tracked axis: channels of ``group`` at ``per``
    positions per channel (16 after flattening 4x4 maps; 1/16 on a heads axis of 16-channel
    heads), or ``group`` None: positions that are never removed."""

    group: int | None
    per: Fraction
    length: int


Segs = tuple  # of Segment


@dataclass
class Edit:
    """An initializer axis that follows channel groups: sliced to the kept positions."""

    node: ir.Node
    value: ir.Value
    axis: int
    segs: Segs
    kind: str


@dataclass
class ShapeEdit:
    """Entries of a Reshape's constant shape that hold a tracked axis' length."""

    node: ir.Node
    entries: dict  # output axis -> Segs


@dataclass
class GroupAttrEdit:
    """A depthwise Conv whose ``group`` is its channel count."""

    node: ir.Node
    segs: Segs


@dataclass
class Group:
    """Channels removed together. ``size`` channels in units of ``block`` (a head: 16 channels),
    ``producers`` the nodes whose output channels they are, ``reasons`` why they are left alone
    (empty: prunable), ``joins`` the elementwise nodes (residual adds) that made it one group."""

    id: int
    size: int
    producers: list = field(default_factory=list)
    block: int = 1
    reasons: list = field(default_factory=list)
    #: the elementwise nodes that join these channels with others (a residual Add): empty
    #: for the channels inside a block
    joins: list = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.reasons

    @property
    def units(self) -> int:
        return self.size // self.block

    def names(self) -> list[str]:
        return [n.name or n.op_type for n in self.producers]


@dataclass
class ChannelGraph:
    """What ``analyze`` found: the groups (merged), every edit that follows them, and the
    nodes left alone with no group of their own (``notes``: node name -> why), and the
    tracked axes of every value."""

    groups: dict  # id -> Group
    edits: list
    shape_edits: list
    attr_edits: list
    notes: dict
    tracks: dict  # value name -> {axis: Segs}: every value with a tracked axis

    def group(self, gid: int) -> Group:
        return self.groups[gid]

    def edits_of(self, gid: int, kinds: Sequence[str] = KINDS) -> list[Edit]:
        return [e for e in self.edits if e.kind in kinds and any(s.group == gid for s in e.segs)]


def _op(node: ir.Node) -> str | None:
    if node.domain in ONNX_DOMAINS:
        return node.op_type
    if node.domain == HAL_DOMAIN:
        return FUSED_BASE.get(node.op_type)
    return None


def _who(node: ir.Node) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else f"an unnamed {node.op_type}"


def _source(v: ir.Value) -> str:
    if v.is_graph_input():
        return f"the model input {v.name!r}, whose channels are kept"
    p = v.producer()
    who = _who(p) if p is not None else "no node"
    return f"{v.name!r} from {who}, whose channels the analysis does not track"


def _scaled(segs: Segs, f) -> Segs:
    return tuple(Segment(s.group, s.per * f, s.length * f) for s in segs)


class _Analyzer:
    def __init__(self, model: ir.Model, exclude: Sequence[str]):
        self.graph = model.graph
        self.info = S.infer(ir.to_proto(model))
        self.exclude = tuple(exclude)
        self.parent: dict[int, int] = {}
        self.groups: dict[int, Group] = {}
        self.tracks: dict[str, dict[int, Segs]] = {}
        self.edits: list[Edit] = []
        self.shape_edits: list[ShapeEdit] = []
        self.attr_edits: list[GroupAttrEdit] = []
        self.notes: dict[str, str] = {}

    # -- groups ------------------------------------------------------------------------------
    def new_group(self, size: int, node: ir.Node) -> Segs:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.groups[gid] = Group(gid, int(size), [node])
        return (Segment(gid, Fraction(1), int(size)),)

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int, where: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        ga, gb = self.groups[a], self.groups[b]
        if ga.size != gb.size:
            self.block_ids([a, b], f"{where} joins {ga.size} channels with {gb.size}")
            return
        self.parent[b] = a
        ga.producers += [p for p in gb.producers if p not in ga.producers]
        ga.block = lcm(ga.block, gb.block)
        ga.joins += [n for n in gb.joins if n not in ga.joins]
        ga.reasons += [r for r in gb.reasons if r not in ga.reasons]
        del self.groups[b]

    def block_ids(self, ids, reason: str) -> None:
        for gid in ids:
            g = self.groups[self.find(gid)]
            if reason not in g.reasons:
                g.reasons.append(reason)

    def block(self, segs: Segs | None, reason: str) -> None:
        if segs:
            self.block_ids([s.group for s in segs if s.group is not None], reason)

    def block_all(self, tracks: dict[int, Segs], reason: str) -> None:
        for segs in tracks.values():
            self.block(segs, reason)

    def unify(self, a: Segs, b: Segs, where: str) -> Segs:
        if [s.length for s in a] != [t.length for t in b]:
            self.block(a + b, f"{where} combines channels laid out differently")
            return a
        for s, t in zip(a, b):
            if s.group is None and t.group is None:
                continue
            if s.group is None or t.group is None:
                self.block((s, t), f"{where} combines them with channels that are kept")
            elif s.per != t.per:
                self.block((s, t), f"{where} combines channels laid out differently")
            else:
                self.union(s.group, t.group, where)
        return a

    # -- values ------------------------------------------------------------------------------
    def dims(self, v: ir.Value | None):
        if v is None:
            return None
        c = const(v)
        if c is not None:
            return tuple(int(d) for d in c.shape)
        return self.info.get(v.name, (None, None))[0]

    def rank(self, v: ir.Value | None) -> int | None:
        d = self.dims(v)
        return None if d is None else len(d)

    def t(self, v: ir.Value | None) -> dict[int, Segs]:
        return self.tracks.get(v.name, {}) if v is not None else {}

    def set(self, v: ir.Value | None, tracks: dict[int, Segs]) -> None:
        if v is not None and tracks:
            self.tracks[v.name] = dict(tracks)

    def excluded(self, name: str) -> str | None:
        return next((p for p in self.exclude if name and fnmatch.fnmatchcase(name, p)), None)

    def edit(self, node: ir.Node, v: ir.Value | None, axis: int, segs: Segs, kind: str) -> None:
        if v is None:
            return
        if const(v) is None:
            self.block(segs, f"{_who(node)} reads them with {v.name!r}, which is not a constant "
                             f"it could slice")
            return
        pat = self.excluded(v.name)
        if pat is not None:
            self.block(segs, f"excluded: {v.name!r} matches {pat!r}")
        self.edits.append(Edit(node, v, axis, segs, kind))

    # -- the walk ----------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for node in self.graph:
            self.visit(node)
            pat = self.excluded(node.name)
            if pat is not None:
                why = f"excluded: node {node.name!r} matches {pat!r}"
                for v in list(node.inputs) + list(node.outputs):
                    self.block_all(self.t(v), why)
                self.notes.setdefault(node.name, why)
        for v in self.graph.outputs:
            self.block_all(self.t(v), f"they reach the model output {v.name!r}, which keeps "
                                      f"its shape")
        self.check_shared()
        groups = {gid: g for gid, g in self.groups.items()}
        res = lambda segs: tuple(Segment(None if s.group is None else self.find(s.group),  # noqa: E731
                                         s.per, s.length) for s in segs)
        for e in self.edits:
            e.segs = res(e.segs)
        for e in self.shape_edits:
            e.entries = {k: res(v) for k, v in e.entries.items()}
        for e in self.attr_edits:
            e.segs = res(e.segs)
        for g in groups.values():
            if g.size % g.block:
                g.reasons.append(f"{g.size} channels do not split into units of {g.block}")
        tracks = {name: {a: res(segs) for a, segs in tr.items()}
                  for name, tr in self.tracks.items()}
        return ChannelGraph(groups, self.edits, self.shape_edits, self.attr_edits, self.notes,
                            tracks)

    def check_shared(self) -> None:
        """An edited initializer must be sliced the same way by every node that reads it."""
        by_value: dict[str, list[Edit]] = {}
        for e in self.edits:
            by_value.setdefault(e.value.name, []).append(e)
        for name, edits in by_value.items():
            v = edits[0].value
            axes: dict[int, Segs] = {}
            for e in edits:
                if e.axis in axes:
                    self.unify(axes[e.axis], e.segs, f"initializer {name!r}")
                else:
                    axes[e.axis] = e.segs
            readers = {id(e.node) for e in edits}
            others = [n for n in v.consumers() if id(n) not in readers]
            why = None
            if others:
                why = f"{name!r} is also read by {_who(others[0])}, which does not follow them"
            elif v.is_graph_output():
                why = f"{name!r} is a model output"
            if why:
                for e in edits:
                    self.block(e.segs, why)

    def visit(self, node: ir.Node) -> None:
        op = _op(node)
        ins = list(node.inputs)
        tracked = [self.t(v) for v in ins if self.t(v)]
        self.block_captured(node)
        handler = getattr(self, f"op_{op}", None) if op else None
        if handler is None:
            if op in UNARY:
                handler = self.op_unary
            elif op in BROADCAST:
                handler = self.op_broadcast
            elif op in POOLS:
                handler = self.op_pool
            elif op in REDUCE:
                handler = self.op_reduce
        if handler is None:
            for tr in tracked:
                self.block_all(tr, f"{_who(node)} reads them; the channel analysis does not "
                                   f"follow {node.op_type}")
            return
        handler(node)

    def block_captured(self, node: ir.Node) -> None:
        """Values a subgraph (If, Loop, Scan) reads from the outer graph are left alone."""
        graphs = []
        for a in node.attributes.values():
            if a.type == ir.AttributeType.GRAPH:
                graphs.append(a.value)
            elif a.type == ir.AttributeType.GRAPHS:
                graphs.extend(a.value)
        while graphs:
            sub = graphs.pop()
            for n in sub:
                for v in n.inputs:
                    if v is not None and v.name in self.tracks:
                        self.block_all(self.tracks[v.name], f"a subgraph of {_who(node)} reads "
                                                            f"{v.name!r}")
                for a in n.attributes.values():
                    if a.type == ir.AttributeType.GRAPH:
                        graphs.append(a.value)
                    elif a.type == ir.AttributeType.GRAPHS:
                        graphs.extend(a.value)

    # -- ops ---------------------------------------------------------------------------------
    def op_unary(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        for out in node.outputs:
            self.set(out, tr)

    def only_axes(self, node: ir.Node, tr: dict[int, Segs], allowed, what: str) -> dict:
        out = {}
        for a, segs in tr.items():
            if a in allowed:
                out[a] = segs
            else:
                self.block(segs, f"{_who(node)} reads them along axis {a}, not as {what}")
        return out

    def op_pool(self, node: ir.Node) -> None:
        tr = self.only_axes(node, self.t(node.inputs[0]), (0, 1), "channels")
        self.set(node.outputs[0], tr)
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            self.block_all(tr, f"{_who(node)}'s indices count the channels")

    def op_BatchNormalization(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        if attribute(node, "training_mode", 0) or any(
                o is not None and (o.uses() or o.is_graph_output()) for o in node.outputs[1:]):
            self.block_all(tr, f"{_who(node)} runs in training mode")
        segs = tr.get(1)
        if segs:
            for i, kind in zip(range(1, 5), ("bn_scale", "bn_bias", "bn_stat", "bn_stat")):
                if i < len(node.inputs):
                    self.edit(node, node.inputs[i], 0, segs, kind)
        self.set(node.outputs[0], tr)

    def op_InstanceNormalization(self, node: ir.Node) -> None:
        tr = self.only_axes(node, self.t(node.inputs[0]), (0, 1), "channels")
        if 1 in tr:
            self.edit(node, node.inputs[1], 0, tr[1], "bn_scale")
            self.edit(node, node.inputs[2], 0, tr[1], "bn_bias")
        self.set(node.outputs[0], tr)

    def op_Conv(self, node: ir.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        tr = self.only_axes(node, self.t(x), (1,), "its input channels")
        W = const(w)
        if W is None or W.ndim < 3:
            self.block(tr.get(1), f"{_who(node)} has a weight that is not a constant")
            self.notes[node.name] = "its weight is not a constant"
            return
        group = int(attribute(node, "group", 1))
        c_in = W.shape[1] * group
        if group == 1:
            if 1 in tr:
                self.edit(node, w, 1, tr[1], "weight_in")
            segs = self.new_group(W.shape[0], node)
            self.edit(node, w, 0, segs, "weight_out")
            self.edit(node, b, 0, segs, "bias")
            self.set(node.outputs[0], {1: segs})
        elif W.shape[1] == 1 and W.shape[0] == group == c_in:
            if 1 in tr:  # depthwise: one filter per channel, the channels pass
                segs = tr[1]
                self.edit(node, w, 0, segs, "weight_out")
                self.edit(node, b, 0, segs, "bias")
                self.attr_edits.append(GroupAttrEdit(node, segs))
                self.set(node.outputs[0], {1: segs})
            else:
                self.notes[node.name] = "depthwise on channels that are kept"
        else:
            why = (f"grouped convolution (group={group}, {c_in} -> {W.shape[0]} channels): its "
                   f"channels are kept (removing them within every group is not supported)")
            if W.shape[1] == 1 and W.shape[0] != c_in:
                why = (f"depthwise convolution with a channel multiplier ({c_in} -> "
                       f"{W.shape[0]} channels): its channels are kept")
            self.block(tr.get(1), f"{_who(node)} is a {why}")
            self.notes[node.name] = why

    def op_ConvTranspose(self, node: ir.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        tr = self.only_axes(node, self.t(x), (1,), "its input channels")
        W = const(w)
        if W is None or W.ndim < 3 or int(attribute(node, "group", 1)) != 1:
            why = "its weight is not a constant" if W is None or W.ndim < 3 else \
                "a grouped ConvTranspose: its channels are kept"
            self.block(tr.get(1), f"{_who(node)}: {why}")
            self.notes[node.name] = why
            return
        if 1 in tr:
            self.edit(node, w, 0, tr[1], "weight_in")
        segs = self.new_group(W.shape[1], node)
        self.edit(node, w, 1, segs, "weight_out")
        self.edit(node, b, 0, segs, "bias")
        self.set(node.outputs[0], {1: segs})

    def op_Gemm(self, node: ir.Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        ta, tb = int(attribute(node, "transA", 0)), int(attribute(node, "transB", 0))
        tr = self.t(a)
        B = const(b)
        if B is None or B.ndim != 2:
            self.block_all(tr, f"{_who(node)} has a weight that is not a constant")
            self.block_all(self.t(b), f"{_who(node)} has a weight that is not a constant")
            self.notes[node.name] = "its weight is not a constant"
            return
        k_axis, m_axis = (0, 1) if ta else (1, 0)
        out = {}
        if k_axis in tr:
            self.edit(node, b, 1 if tb else 0, tr[k_axis], "weight_in")
        if m_axis in tr:
            out[0] = tr[m_axis]
        n = B.shape[0 if tb else 1]
        segs = self.new_group(n, node)
        self.edit(node, b, 0 if tb else 1, segs, "weight_out")
        if c is not None:
            C = const(c)
            if C is None:
                self.block(segs, f"{_who(node)}'s C {c.name!r} is not a constant")
            elif C.ndim >= 1 and C.shape[-1] == n and n > 1:
                if C.ndim == 2 and C.shape[0] > 1:
                    self.block(segs, f"{_who(node)}'s C varies along the rows")
                self.edit(node, c, C.ndim - 1, segs, "bias")
        out[1] = segs
        self.set(node.outputs[0], out)

    def op_MatMul(self, node: ir.Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        ta, tb = self.t(a), self.t(b)
        ra, rb = self.rank(a), self.rank(b)
        if ra is None or rb is None or ra < 2 or rb < 2:
            why = f"{_who(node)} multiplies operands of unknown or rank-1 shape"
            self.block_all(ta, why)
            self.block_all(tb, why)
            return
        r = max(ra, rb)
        out: dict[int, Segs] = {}
        for ax in range(r - 2):  # broadcast batch axes
            segs = self.broadcast_axis(node, [(a, ax - (r - ra)), (b, ax - (r - rb))], "param")
            if segs:
                out[ax] = segs
        sa, sb = ta.get(ra - 1), tb.get(rb - 2)
        where = f"{_who(node)}"
        if sa and sb:
            self.unify(sa, sb, where)
        elif sa:
            if const(b) is not None:
                self.edit(node, b, rb - 2, sa, "weight_in")
            else:
                self.block(sa, f"{where} multiplies them with {b.name!r}, whose rows are not "
                               f"tracked")
        elif sb:
            if const(a) is not None:
                self.edit(node, a, ra - 1, sb, "weight_in")
            else:
                self.block(sb, f"{where} multiplies them with {a.name!r}, whose columns are "
                               f"not tracked")
        if ta.get(ra - 2):
            out[r - 2] = ta[ra - 2]
        if tb.get(rb - 1):
            out[r - 1] = tb[rb - 1]
        elif const(b) is not None and const(a) is None:
            segs = self.new_group(const(b).shape[-1], node)
            self.edit(node, b, rb - 1, segs, "weight_out")
            out[r - 1] = segs
        self.set(node.outputs[0], out)

    def broadcast_axis(self, node: ir.Node, entries, kind: str) -> Segs | None:
        """Join the channels that meet on one output axis of a broadcast: ``entries`` are
        (value, its axis or negative when it has none there)."""
        where = _who(node)
        present = [(v, ax) for v, ax in entries if v is not None and ax >= 0]
        tracked = [self.t(v)[ax] for v, ax in present if ax in self.t(v)]
        if not tracked:
            return None
        segs = tracked[0]
        for other in tracked[1:]:
            segs = self.unify(segs, other, where)
        if len(tracked) > 1:
            for gid in {s.group for segs_ in tracked for s in segs_ if s.group is not None}:
                g = self.groups[self.find(gid)]
                if where not in g.joins:
                    g.joins.append(where)
        for v, ax in present:
            if ax in self.t(v):
                continue
            d = self.dims(v)
            dim = d[ax] if d is not None else None
            if dim == 1:
                continue
            if const(v) is not None:
                self.edit(node, v, ax, segs, kind)
            else:
                self.block(segs, f"{where} combines them with {_source(v)}")
        return segs

    def op_broadcast(self, node: ir.Node) -> None:
        ins = [v for v in node.inputs if v is not None]
        ranks = [self.rank(v) for v in ins]
        if any(self.t(v) for v in ins) and any(r is None for r in ranks):
            for v in ins:
                self.block_all(self.t(v), f"{_who(node)} has an operand of unknown rank")
            return
        if not any(self.t(v) for v in ins):
            return
        kind = {"Add": "bias", "Sub": "bias", "Mul": "scale"}.get(node.op_type, "param")
        r = max(ranks)
        out = {}
        for ax in range(r):
            segs = self.broadcast_axis(node, [(v, ax - (r - rv)) for v, rv in zip(ins, ranks)],
                                       kind)
            if segs:
                out[ax] = segs
        self.set(node.outputs[0], out)

    def op_Concat(self, node: ir.Node) -> None:
        ins = [v for v in node.inputs if v is not None]
        r = self.rank(node.outputs[0]) or next((self.rank(v) for v in ins if self.rank(v)), None)
        if not any(self.t(v) for v in ins):
            return
        if r is None:
            for v in ins:
                self.block_all(self.t(v), f"{_who(node)} has an output of unknown rank")
            return
        axis = int(attribute(node, "axis", 0)) % r
        out: dict[int, Segs] = {}
        parts: list[Segment] = []
        known = True
        for v in ins:
            segs = self.t(v).get(axis)
            if segs:
                parts.extend(segs)
                continue
            d = self.dims(v)
            if d is None or not isinstance(d[axis], int):
                known = False
            elif d[axis] > 0:
                parts.append(Segment(None, Fraction(1), d[axis]))
        if any(s.group is not None for s in parts):
            if known:
                out[axis] = tuple(parts)
            else:
                for v in ins:
                    self.block(self.t(v).get(axis), f"{_who(node)} concatenates them with an "
                                                    f"input of unknown size")
        for ax in range(r):
            if ax == axis:
                continue
            segs = self.broadcast_axis(node, [(v, ax) for v in ins], "param")
            if segs:
                out[ax] = segs
        self.set(node.outputs[0], out)

    def op_Transpose(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        r = self.rank(node.inputs[0])
        perm = attribute(node, "perm")
        if perm is None:
            if r is None:
                self.block_all(tr, f"{_who(node)} has an input of unknown rank")
                return
            perm = list(reversed(range(r)))
        self.set(node.outputs[0], {list(perm).index(a): s for a, s in tr.items()})

    def op_Flatten(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        d = self.dims(node.inputs[0])
        if not tr:
            return
        if d is None:
            self.block_all(tr, f"{_who(node)} has an input of unknown shape")
            return
        k = int(attribute(node, "axis", 1)) % (len(d) + 1)
        out = {}
        for a, segs in tr.items():
            span = range(0, k) if a < k else range(k, len(d))
            merged = self.merge(node, d, list(span), a, tr)
            if merged is not None:
                out[0 if a < k else 1] = merged
        self.set(node.outputs[0], out)

    def merge(self, node, d, axes: list[int], a: int, tr) -> Segs | None:
        """The segments of tracked axis ``a`` once ``axes`` (which hold it) become one axis:
        ``a`` must be the first of them that is not 1, and the others untracked and static."""
        segs = tr[a]
        before = [i for i in axes if i < a]
        after = [i for i in axes if i > a]
        if any(d[i] != 1 for i in before):
            self.block(segs, f"{_who(node)} merges the channel axis with the axes before it")
            return None
        if any(i in tr for i in before + after):
            self.block(segs, f"{_who(node)} merges two tracked axes")
            return None
        if not all(isinstance(d[i], int) for i in after):
            self.block(segs, f"{_who(node)} merges the channel axis with axes of unknown size")
            return None
        merged = _scaled(segs, prod(d[i] for i in after))
        if any(s.per.denominator != 1 and s.per.numerator != 1 for s in merged):
            self.block(segs, f"{_who(node)} merges parts of heads with other axes")
            return None
        return merged

    def op_Reshape(self, node: ir.Node) -> None:
        x, shape_v = node.inputs[0], node.inputs[1]
        tr = self.t(x)
        if not tr:
            return
        target = const(shape_v)
        din, dout = self.dims(x), self.dims(node.outputs[0])
        if target is None or int(attribute(node, "allowzero", 0)):
            self.block_all(tr, f"{_who(node)} takes a shape that is not a constant")
            return
        target = [int(t) for t in target.reshape(-1)]
        groups = _align(din, dout) if din is not None and dout is not None else None
        if groups is None:
            self.block_all(tr, f"{_who(node)}: the analysis cannot follow a reshape of "
                               f"{S.fmt(din)} to {S.fmt(dout)}")
            return
        out: dict[int, Segs] = {}
        for a, segs in tr.items():
            ins, outs = next((g for g in groups if a in g[0]), (None, None))
            ins_n = [i for i in ins if din[i] != 1 or i == a]
            outs_n = [j for j in outs if dout[j] != 1]
            if any(i in tr for i in ins if i != a):
                self.block(segs, f"{_who(node)} merges two tracked axes")
            elif ins_n == [a] and len(outs_n) == 1:
                out[outs_n[0]] = segs
            elif ins_n[0] == a and len(outs_n) == 1:
                merged = self.merge(node, din, ins, a, tr)
                if merged is not None:
                    out[outs_n[0]] = merged
            elif ins_n == [a] and len(outs_n) > 1:
                split = self.split(node, segs, prod(dout[j] for j in outs_n[1:]))
                if split is not None:
                    out[outs_n[0]] = split
            else:
                self.block(segs, f"{_who(node)}: the analysis cannot follow a reshape of "
                                 f"{S.fmt(din)} to {S.fmt(dout)}")
        entries = {}
        for j, t in enumerate(target):
            if t == 0 and (j in tr or j in out) and not (j in tr and out.get(j) is tr[j]):
                self.block_all(tr, f"{_who(node)} copies axis {j} (a 0 in its shape) across "
                                   f"a change of the channel layout")
                return
            if t > 0 and j in out:
                entries[j] = out[j]
        if entries:
            self.shape_edits.append(ShapeEdit(node, entries))
        self.set(node.outputs[0], out)

    def split(self, node: ir.Node, segs: Segs, inner: int) -> Segs | None:
        """A channel axis split into (outer, inner): whole outer positions (heads) are the
        units removed, each ``inner / per`` channels."""
        if len(segs) != 1 or segs[0].group is None:
            self.block(segs, f"{_who(node)} splits an axis made of several groups")
            return None
        s = segs[0]
        per_unit = Fraction(inner) / s.per
        if per_unit.denominator != 1 or s.length % inner:
            self.block(segs, f"{_who(node)} splits the channels unevenly")
            return None
        g = self.groups[self.find(s.group)]
        g.block = lcm(g.block, int(per_unit))
        return (Segment(s.group, s.per / inner, s.length // inner),)

    def axes_input(self, node: ir.Node, attr: str = "axes") -> list[int] | None:
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            c = const(node.inputs[1])
            return None if c is None else [int(i) for i in c.reshape(-1)]
        a = attribute(node, attr)
        return None if a is None else [int(i) for i in a]

    def op_Squeeze(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        d = self.dims(node.inputs[0])
        if not tr:
            return
        axes = self.axes_input(node)
        if d is None or (axes is None and not all(isinstance(i, int) for i in d)):
            self.block_all(tr, f"{_who(node)} has an input of unknown shape")
            return
        r = len(d)
        axes = [i % r for i in axes] if axes is not None else [i for i in range(r) if d[i] == 1]
        out = {}
        for a, segs in tr.items():
            if a in axes:
                self.block(segs, f"{_who(node)} removes the channel axis")
            else:
                out[a - sum(1 for i in axes if i < a)] = segs
        self.set(node.outputs[0], out)

    def op_Unsqueeze(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        if not tr:
            return
        axes, r = self.axes_input(node), self.rank(node.inputs[0])
        if axes is None or r is None:
            self.block_all(tr, f"{_who(node)} has axes or a rank that are not known")
            return
        rout = r + len(axes)
        inserted = sorted(i % rout for i in axes)
        kept = [j for j in range(rout) if j not in inserted]
        self.set(node.outputs[0], {kept[a]: s for a, s in tr.items()})

    def op_Softmax(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        if r is None:
            self.block_all(tr, f"{_who(node)} has an input of unknown rank")
            return
        axis = int(attribute(node, "axis", -1)) % r
        self.set(node.outputs[0], self.reduced(node, tr, {axis}, keep=True))

    op_LogSoftmax = op_Softmax
    op_Hardmax = op_Softmax

    def reduced(self, node: ir.Node, tr, axes: set[int], keep: bool) -> dict:
        out = {}
        for a, segs in tr.items():
            if a in axes:
                self.block(segs, f"{_who(node)} reduces or normalizes over them")
            else:
                out[a if keep else a - sum(1 for i in axes if i < a)] = segs
        return out

    def op_LayerNormalization(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        if r is None:
            self.block_all(tr, f"{_who(node)} has an input of unknown rank")
            return
        axis = int(attribute(node, "axis", -1)) % r
        out = self.reduced(node, tr, set(range(axis, r)), keep=True)
        if any(o is not None and o.uses() for o in node.outputs[1:]):
            self.block_all(tr, f"{_who(node)}'s statistics are used")
        self.set(node.outputs[0], out)

    def op_reduce(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        axes = self.axes_input(node)
        if r is None or (len(node.inputs) > 1 and node.inputs[1] is not None and axes is None):
            self.block_all(tr, f"{_who(node)} reduces over axes that are not known")
            return
        if not axes:
            if int(attribute(node, "noop_with_empty_axes", 0)):
                self.set(node.outputs[0], tr)
                return
            axes = list(range(r))
        keep = bool(int(attribute(node, "keepdims", 1)))
        self.set(node.outputs[0], self.reduced(node, tr, {i % r for i in axes}, keep))

    def op_Pad(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        pads = const(node.inputs[1]) if len(node.inputs) > 1 else None
        axes_v = node.inputs[3] if len(node.inputs) > 3 else None
        axes = None if axes_v is None else const(axes_v)
        if r is None or pads is None or (axes_v is not None and axes is None):
            self.block_all(tr, f"{_who(node)} pads by amounts that are not constants")
            return
        axes = list(range(r)) if axes is None else [int(i) % r for i in axes.reshape(-1)]
        pads = [int(p) for p in pads.reshape(-1)]
        padded = {ax for i, ax in enumerate(axes) if pads[i] or pads[i + len(axes)]}
        self.set(node.outputs[0], self.reduced(node, tr, padded, keep=True))

    def op_Slice(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        axes_v = node.inputs[3] if len(node.inputs) > 3 else None
        axes = None if axes_v is None else const(axes_v)
        if r is None or (axes_v is not None and axes is None):
            self.block_all(tr, f"{_who(node)} slices axes that are not known")
            return
        axes = set(range(r)) if axes is None else {int(i) % r for i in axes.reshape(-1)}
        if axes_v is None:  # starts covers the first len(starts) axes
            starts = const(node.inputs[1])
            axes = set(range(r)) if starts is None else set(range(starts.size))
        self.set(node.outputs[0], self.reduced(node, tr, axes, keep=True))

    def op_Split(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        if r is None:
            self.block_all(tr, f"{_who(node)} has an input of unknown rank")
            return
        out = self.reduced(node, tr, {int(attribute(node, "axis", 0)) % r}, keep=True)
        for o in node.outputs:
            self.set(o, out)


def _align(din, dout) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input and output axes of a reshape with equal products; a symbolic
    dimension pairs only with itself. None when the shapes do not line up that way."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(din) and j < len(dout):
        a, b = din[i], dout[j]
        if not isinstance(a, int) or not isinstance(b, int):
            if a is not None and a == b:
                groups.append(([i], [j]))
                i, j = i + 1, j + 1
                continue
            return None
        ins, outs, pa, pb = [i], [j], a, b
        while pa != pb:
            if pa < pb:
                i += 1
                if i >= len(din) or not isinstance(din[i], int):
                    return None
                ins.append(i)
                pa *= din[i]
            else:
                j += 1
                if j >= len(dout) or not isinstance(dout[j], int):
                    return None
                outs.append(j)
                pb *= dout[j]
        groups.append((ins, outs))
        i, j = i + 1, j + 1
    for k in range(i, len(din)):
        if din[k] != 1 or not groups:
            return None
        groups[-1][0].append(k)
    for k in range(j, len(dout)):
        if dout[k] != 1 or not groups:
            return None
        groups[-1][1].append(k)
    return groups


def analyze(model: ir.Model, exclude: Sequence[str] = ()) -> ChannelGraph:
    """The channel groups of ``model`` (an onnx_ir Model, read, not changed) and what follows
    them. ``exclude``: fnmatch patterns of node or initializer names whose tensors keep their
    shape (every group reaching them is left alone)."""
    return _Analyzer(model, exclude).run()


def positions(segs: Segs, kept: dict[int, np.ndarray]) -> np.ndarray:
    """The positions of an axis laid out as ``segs`` that stay when group ``g`` keeps the
    channels ``kept[g]`` (sorted; a group not in ``kept`` keeps all)."""
    out, offset = [], 0
    for s in segs:
        ch = kept.get(s.group) if s.group is not None else None
        if ch is None:
            out.append(np.arange(offset, offset + s.length))
        elif s.per >= 1:
            p = int(s.per)
            out.append(offset + (np.asarray(ch)[:, None] * p + np.arange(p)[None, :]).reshape(-1))
        else:
            k = int(1 / s.per)
            out.append(offset + np.unique(np.asarray(ch) // k))
        offset += s.length
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def length(segs: Segs) -> int:
    return sum(s.length for s in segs)
