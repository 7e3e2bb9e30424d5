"""Removing channels: score the groups ``hal.passes.channels.analyze`` found, keep the strongest
units of each, and slice every tensor that follows them.

    cg = analyze(model.ir)                                   # groups and what follows them
    sel = select(cg, ratio=0.5, importance="l1")             # kept channels per group
    PruneChannels(cg, sel.kept)(model.ir)                    # slice, in place

Importance of a channel: ``l1``/``l2``, the norm of each producer's output-channel weights
(Conv/Gemm/MatMul output channels, a depthwise Conv's filters), summed over the group's
producers; ``bn_gamma``, ``|gamma|`` of the BatchNormalizations on the group, summed. A unit
(one channel, or one attention head) scores the sum of its channels.

``zero_channels`` is the oracle of the rewrite: the unpruned model with the removed channels'
producing tensors (weights, biases, BatchNorm scale and shift) set to zero computes what the
pruned model computes, wherever the ops between a producer and its consumers map 0 to 0
(ReLU, Clip, GELU, max pooling, residual adds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import lcm

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.ir.graph import add_initializer, const, set_input
from hal.passes.base import HalPass
from hal.passes.channel_graph import PRODUCING, ChannelGraph, positions

#: the importance criteria ``select`` knows
IMPORTANCE = ("l1", "l2", "bn_gamma")


@dataclass
class Selection:
    """``kept``: group id -> sorted kept channel indices (only groups that lose channels);
    ``skipped``: group id -> why a prunable group keeps all its channels; ``scores``: group id
    -> importance of each unit."""

    kept: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)


def channel_scores(cg: ChannelGraph, gid: int, importance: str) -> np.ndarray | None:
    """Importance of each channel of group ``gid``; None when the group has no tensor the
    criterion reads (``bn_gamma`` without a BatchNormalization)."""
    g = cg.groups[gid]
    kinds = ("bn_scale",) if importance == "bn_gamma" else ("weight_out",)
    total = np.zeros(g.size, np.float64)
    found, seen = False, set()
    for e in cg.edits_of(gid, kinds):
        if (e.value.name, e.axis) in seen:
            continue
        seen.add((e.value.name, e.axis))
        arr = np.asarray(const(e.value), np.float64)
        rows = np.moveaxis(arr, e.axis, 0).reshape(arr.shape[e.axis], -1)
        per_pos = np.sqrt((rows * rows).sum(1)) if importance == "l2" else np.abs(rows).sum(1)
        offset = 0
        for s in e.segs:
            if s.group == gid:
                chunk = per_pos[offset:offset + s.length]
                if s.per >= 1:
                    total += chunk.reshape(g.size, int(s.per)).sum(1)
                else:
                    k = int(1 / s.per)
                    total += np.repeat(chunk, k) / k
                found = True
            offset += s.length
    return total if found else None


def scored_groups(cg: ChannelGraph, importance: str, keep_residual: bool, sel: Selection):
    """(group id, group, importance of each unit) of every group that may lose units; the
    groups left whole are in ``sel.skipped`` with why, the scores in ``sel.scores``."""
    for gid, g in cg.groups.items():
        if not g.prunable:
            continue
        if keep_residual and g.joins:
            sel.skipped[gid] = (f"a residual stream (joined by {g.joins[0]}"
                                + (f" and {len(g.joins) - 1} more" if len(g.joins) > 1 else "")
                                + "): keep_residual=True")
            continue
        scores = channel_scores(cg, gid, importance)
        if scores is None:
            sel.skipped[gid] = (f"importance={importance!r}: no BatchNormalization scales these "
                                f"channels")
            continue
        sel.scores[gid] = scores.reshape(g.units, g.block).sum(1)
        yield gid, g, sel.scores[gid]


def select(cg: ChannelGraph, ratio: float, importance: str = "l1",
           round_to: int | None = None, keep_residual: bool = False) -> Selection:
    """Per prunable group, the units to keep: ``ratio`` of them removed (rounded half up, at
    least one kept), the kept channel count rounded up to a multiple of ``round_to``; the
    units of highest importance stay (ties: the earlier unit), in their order.
    ``keep_residual``: groups joined by an elementwise node (a residual stream) keep all."""
    sel = Selection()
    for gid, g, unit_scores in scored_groups(cg, importance, keep_residual, sel):
        units = g.units
        keep = max(1, units - int(np.floor(units * ratio + 0.5)))
        if round_to:
            step = lcm(int(round_to), g.block) // g.block
            keep = min(units, -(-keep // step) * step)
        if keep >= units:
            what = "channels" if g.block == 1 else f"units of {g.block} channels"
            sel.skipped[gid] = (f"ratio={ratio} of {units} {what} removes none" if not round_to
                                else f"ratio={ratio} of {units} {what} with round_to={round_to} "
                                     f"removes none")
            continue
        order = np.sort(np.argsort(-unit_scores, kind="stable")[:keep])
        sel.kept[gid] = (order[:, None] * g.block + np.arange(g.block)[None, :]).reshape(-1)
    return sel


def _new_arrays(cg: ChannelGraph, kept: dict) -> dict[str, tuple[ir.Value, np.ndarray]]:
    """Initializer name -> (value, its sliced array) for every initializer that shrinks."""
    axes: dict[str, dict[int, tuple]] = {}
    values: dict[str, ir.Value] = {}
    for e in cg.edits:
        values[e.value.name] = e.value
        axes.setdefault(e.value.name, {}).setdefault(e.axis, e.segs)
    out = {}
    for name, by_axis in axes.items():
        arr = const(values[name])
        new = arr
        for axis, segs in by_axis.items():
            pos = positions(segs, kept)
            if len(pos) != new.shape[axis]:
                new = np.take(new, pos, axis=axis)
        if new is not arr:
            out[name] = (values[name], np.ascontiguousarray(new))
    return out


class PruneChannels(HalPass):
    """Slice every initializer axis, Reshape shape entry and depthwise ``group`` that follows
    the channel groups of ``cg`` to the channels in ``kept`` (group id -> kept indices). The
    model must be the one ``cg`` was computed on (its values are edited in place)."""

    hal_name = "PruneChannels"

    def __init__(self, cg: ChannelGraph, kept: dict):
        super().__init__()
        self.cg, self.kept = cg, kept

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        kept = self.kept
        arrays = _new_arrays(self.cg, kept)
        for name, (v, arr) in arrays.items():
            v.const_value = ir.tensor(arr, name=name)
            v.shape = ir.Shape(arr.shape)
        for se in self.cg.shape_edits:
            shape_v = se.node.inputs[1]
            target = const(shape_v).copy()
            for j, segs in se.entries.items():
                target[j] = len(positions(segs, kept))
            if np.array_equal(target, const(shape_v)):
                continue
            if len(shape_v.uses()) == 1 and shape_v.name in g.initializers:
                shape_v.const_value = ir.tensor(target, name=shape_v.name)
            else:
                set_input(se.node, 1, add_initializer(g, target, f"{shape_v.name}.pruned"))
        for ae in self.cg.attr_edits:
            n = len(positions(ae.segs, kept))
            if n != int(ae.node.attributes["group"].value):
                ae.node.attributes["group"] = ir.AttrInt64("group", n)
        changed = {name for name, tracks in self.cg.tracks.items()
                   if any(s.group in kept for segs in tracks.values() for s in segs)}
        for node in g:
            for v in node.outputs:
                if v is not None and v.name in changed and not v.is_graph_output():
                    v.shape = None
        removed = sum(self.cg.groups[gid].size - len(k) for gid, k in kept.items())
        self.detail = (f"removed {removed} channels from {len(kept)} groups, "
                       f"{len(arrays)} initializers sliced")
        return PassResult(model, bool(kept))


def zero_channels(model: ir.Model, cg: ChannelGraph, kept: dict) -> None:
    """Set the removed channels' producing tensors of ``model`` (the unpruned model ``cg``
    was computed on, in place) to zero: the oracle ``PruneChannels`` must agree with."""
    done = set()
    for e in cg.edits:
        if e.kind not in PRODUCING or (e.value.name, e.axis) in done:
            continue
        done.add((e.value.name, e.axis))
        arr = const(e.value).copy()
        pos = positions(e.segs, kept)
        mask = np.ones(arr.shape[e.axis], bool)
        mask[pos] = False
        if mask.any():
            index = [slice(None)] * arr.ndim
            index[e.axis] = mask
            arr[tuple(index)] = 0
            e.value.const_value = ir.tensor(arr, name=e.value.name)
