"""How channels pass through compute, normalization and elementwise ops: the analyzer's rules
for unary ops, pooling, normalization, Conv, Gemm, MatMul, broadcast ops and Concat."""

from __future__ import annotations

from fractions import Fraction

import onnx_ir as ir

from hal.ir.attributes import attribute
from hal.ir.graph import const
from hal.passes.channel_graph import GroupAttrEdit, Segment, Segs, source, who


class LayerRules:
    """Rules of the analyzer in ``hal.passes.channels`` (mixed into it: ``self`` is the
    analyzer)."""

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
                self.block(segs, f"{who(node)} reads them along axis {a}, not as {what}")
        return out

    def op_pool(self, node: ir.Node) -> None:
        tr = self.only_axes(node, self.t(node.inputs[0]), (0, 1), "channels")
        self.set(node.outputs[0], tr)
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            self.block_all(tr, f"{who(node)}'s indices count the channels")

    def op_BatchNormalization(self, node: ir.Node) -> None:
        tr = self.t(node.inputs[0])
        if attribute(node, "training_mode", 0) or any(
                o is not None and (o.uses() or o.is_graph_output()) for o in node.outputs[1:]):
            self.block_all(tr, f"{who(node)} runs in training mode")
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
            self.block(tr.get(1), f"{who(node)} has a weight that is not a constant")
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
            self.block(tr.get(1), f"{who(node)} is a {why}")
            self.notes[node.name] = why

    def op_ConvTranspose(self, node: ir.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        tr = self.only_axes(node, self.t(x), (1,), "its input channels")
        W = const(w)
        if W is None or W.ndim < 3 or int(attribute(node, "group", 1)) != 1:
            why = "its weight is not a constant" if W is None or W.ndim < 3 else \
                "a grouped ConvTranspose: its channels are kept"
            self.block(tr.get(1), f"{who(node)}: {why}")
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
            self.block_all(tr, f"{who(node)} has a weight that is not a constant")
            self.block_all(self.t(b), f"{who(node)} has a weight that is not a constant")
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
                self.block(segs, f"{who(node)}'s C {c.name!r} is not a constant")
            elif C.ndim >= 1 and C.shape[-1] == n and n > 1:
                if C.ndim == 2 and C.shape[0] > 1:
                    self.block(segs, f"{who(node)}'s C varies along the rows")
                self.edit(node, c, C.ndim - 1, segs, "bias")
        out[1] = segs
        self.set(node.outputs[0], out)

    def op_MatMul(self, node: ir.Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        ta, tb = self.t(a), self.t(b)
        ra, rb = self.rank(a), self.rank(b)
        if ra is None or rb is None or ra < 2 or rb < 2:
            why = f"{who(node)} multiplies operands of unknown or rank-1 shape"
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
        where = f"{who(node)}"
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
        where = who(node)
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
                self.block(segs, f"{where} combines them with {source(v)}")
        return segs

    def op_broadcast(self, node: ir.Node) -> None:
        ins = [v for v in node.inputs if v is not None]
        ranks = [self.rank(v) for v in ins]
        if any(self.t(v) for v in ins) and any(r is None for r in ranks):
            for v in ins:
                self.block_all(self.t(v), f"{who(node)} has an operand of unknown rank")
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
                self.block_all(self.t(v), f"{who(node)} has an output of unknown rank")
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
                    self.block(self.t(v).get(axis), f"{who(node)} concatenates them with an "
                                                    f"input of unknown size")
        for ax in range(r):
            if ax == axis:
                continue
            segs = self.broadcast_axis(node, [(v, ax) for v in ins], "param")
            if segs:
                out[ax] = segs
        self.set(node.outputs[0], out)

