"""The data of the channel dependency analysis (``hal.passes.channels``): segments of a
tracked axis, the groups of channels removed together, the edits that follow them, and the
helpers its rules share."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np
import onnx_ir as ir

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


def op_of(node: ir.Node) -> str | None:
    if node.domain in ONNX_DOMAINS:
        return node.op_type
    if node.domain == HAL_DOMAIN:
        return FUSED_BASE.get(node.op_type)
    return None


def who(node: ir.Node) -> str:
    return f"{node.op_type} {node.name!r}" if node.name else f"an unnamed {node.op_type}"


def source(v: ir.Value) -> str:
    if v.is_graph_input():
        return f"the model input {v.name!r}, whose channels are kept"
    p = v.producer()
    by = who(p) if p is not None else "no node"
    return f"{v.name!r} from {by}, whose channels the analysis does not track"


def scaled(segs: Segs, f) -> Segs:
    return tuple(Segment(s.group, s.per * f, s.length * f) for s in segs)


def align(din, dout) -> list[tuple[list[int], list[int]]] | None:
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
