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
from fractions import Fraction
from math import lcm
from typing import Sequence

import onnx_ir as ir

from hal.ir import shapes as S
from hal.ir.graph import const
from hal.passes.channel_graph import (BROADCAST, POOLS, REDUCE, UNARY, ChannelGraph, Edit, Group,
                                     GroupAttrEdit, Segment, Segs, ShapeEdit, op_of, who)
from hal.passes.channel_rules import LayerRules
from hal.passes.channel_shapes import ShapeRules


class _Analyzer(LayerRules, ShapeRules):
    """One walk over the graph: groups (union-find), tracked axes and edits; the rules per op
    are in ``channel_rules`` and ``channel_shapes``."""

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
            self.block(segs, f"{who(node)} reads them with {v.name!r}, which is not a constant "
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
                why = f"{name!r} is also read by {who(others[0])}, which does not follow them"
            elif v.is_graph_output():
                why = f"{name!r} is a model output"
            if why:
                for e in edits:
                    self.block(e.segs, why)

    def visit(self, node: ir.Node) -> None:
        op = op_of(node)
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
                self.block_all(tr, f"{who(node)} reads them; the channel analysis does not "
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
                        self.block_all(self.tracks[v.name], f"a subgraph of {who(node)} reads "
                                                            f"{v.name!r}")
                for a in n.attributes.values():
                    if a.type == ir.AttributeType.GRAPH:
                        graphs.append(a.value)
                    elif a.type == ir.AttributeType.GRAPHS:
                        graphs.extend(a.value)

    # -- ops ---------------------------------------------------------------------------------


def analyze(model: ir.Model, exclude: Sequence[str] = ()) -> ChannelGraph:
    """The channel groups of ``model`` (an onnx_ir Model, read, not changed) and what follows
    them. ``exclude``: fnmatch patterns of node or initializer names whose tensors keep their
    shape (every group reaching them is left alone)."""
    return _Analyzer(model, exclude).run()
