"""How channels pass through ops that move or reshape axes: the analyzer's rules for Transpose,
Flatten, Reshape, Squeeze/Unsqueeze, Softmax, LayerNormalization, Reduce, Pad, Slice, Split."""

from __future__ import annotations

from fractions import Fraction
from math import lcm, prod

import onnx_ir as ir

from hal.ir import shapes as S
from hal.ir.attributes import attribute
from hal.ir.graph import const
from hal.passes.channel_graph import Segment, Segs, ShapeEdit, align, scaled, who


class ShapeRules:
    """Rules of the analyzer in ``hal.passes.channels`` (mixed into it: ``self`` is the
    analyzer)."""

    def op_Transpose(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        r = self.rank(node.inputs[0])
        perm = attribute(node, "perm")
        if perm is None:
            if r is None:
                self.block_all(tr, f"{who(node)} has an input of unknown rank")
                return
            perm = list(reversed(range(r)))
        self.set(node.outputs[0], {list(perm).index(a): s for a, s in tr.items()})

    def op_Flatten(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        d = self.dims(node.inputs[0])
        if not tr:
            return
        if d is None:
            self.block_all(tr, f"{who(node)} has an input of unknown shape")
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
            self.block(segs, f"{who(node)} merges the channel axis with the axes before it")
            return None
        if any(i in tr for i in before + after):
            self.block(segs, f"{who(node)} merges two tracked axes")
            return None
        if not all(isinstance(d[i], int) for i in after):
            self.block(segs, f"{who(node)} merges the channel axis with axes of unknown size")
            return None
        merged = scaled(segs, prod(d[i] for i in after))
        if any(s.per.denominator != 1 and s.per.numerator != 1 for s in merged):
            self.block(segs, f"{who(node)} merges parts of heads with other axes")
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
            self.block_all(tr, f"{who(node)} takes a shape that is not a constant")
            return
        target = [int(t) for t in target.reshape(-1)]
        groups = align(din, dout) if din is not None and dout is not None else None
        if groups is None:
            self.block_all(tr, f"{who(node)}: the analysis cannot follow a reshape of "
                               f"{S.fmt(din)} to {S.fmt(dout)}")
            return
        out: dict[int, Segs] = {}
        for a, segs in tr.items():
            ins, outs = next((g for g in groups if a in g[0]), (None, None))
            ins_n = [i for i in ins if din[i] != 1 or i == a]
            outs_n = [j for j in outs if dout[j] != 1]
            if any(i in tr for i in ins if i != a):
                self.block(segs, f"{who(node)} merges two tracked axes")
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
                self.block(segs, f"{who(node)}: the analysis cannot follow a reshape of "
                                 f"{S.fmt(din)} to {S.fmt(dout)}")
        entries = {}
        for j, t in enumerate(target):
            if t == 0 and (j in tr or j in out) and not (j in tr and out.get(j) is tr[j]):
                self.block_all(tr, f"{who(node)} copies axis {j} (a 0 in its shape) across "
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
            self.block(segs, f"{who(node)} splits an axis made of several groups")
            return None
        s = segs[0]
        per_unit = Fraction(inner) / s.per
        if per_unit.denominator != 1 or s.length % inner:
            self.block(segs, f"{who(node)} splits the channels unevenly")
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
            self.block_all(tr, f"{who(node)} has an input of unknown shape")
            return
        r = len(d)
        axes = [i % r for i in axes] if axes is not None else [i for i in range(r) if d[i] == 1]
        out = {}
        for a, segs in tr.items():
            if a in axes:
                self.block(segs, f"{who(node)} removes the channel axis")
            else:
                out[a - sum(1 for i in axes if i < a)] = segs
        self.set(node.outputs[0], out)

    def op_Unsqueeze(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        if not tr:
            return
        axes, r = self.axes_input(node), self.rank(node.inputs[0])
        if axes is None or r is None:
            self.block_all(tr, f"{who(node)} has axes or a rank that are not known")
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
            self.block_all(tr, f"{who(node)} has an input of unknown rank")
            return
        axis = int(attribute(node, "axis", -1)) % r
        self.set(node.outputs[0], self.reduced(node, tr, {axis}, keep=True))

    op_LogSoftmax = op_Softmax
    op_Hardmax = op_Softmax

    def reduced(self, node: ir.Node, tr, axes: set[int], keep: bool) -> dict:
        out = {}
        for a, segs in tr.items():
            if a in axes:
                self.block(segs, f"{who(node)} reduces or normalizes over them")
            else:
                out[a if keep else a - sum(1 for i in axes if i < a)] = segs
        return out

    def op_LayerNormalization(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        if r is None:
            self.block_all(tr, f"{who(node)} has an input of unknown rank")
            return
        axis = int(attribute(node, "axis", -1)) % r
        out = self.reduced(node, tr, set(range(axis, r)), keep=True)
        if any(o is not None and o.uses() for o in node.outputs[1:]):
            self.block_all(tr, f"{who(node)}'s statistics are used")
        self.set(node.outputs[0], out)

    def op_reduce(self, node: ir.Node) -> None:
        tr, r = self.t(node.inputs[0]), self.rank(node.inputs[0])
        if not tr:
            return
        axes = self.axes_input(node)
        if r is None or (len(node.inputs) > 1 and node.inputs[1] is not None and axes is None):
            self.block_all(tr, f"{who(node)} reduces over axes that are not known")
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
            self.block_all(tr, f"{who(node)} pads by amounts that are not constants")
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
            self.block_all(tr, f"{who(node)} slices axes that are not known")
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
            self.block_all(tr, f"{who(node)} has an input of unknown rank")
            return
        out = self.reduced(node, tr, {int(attribute(node, "axis", 0)) % r}, keep=True)
        for o in node.outputs:
            self.set(o, out)
