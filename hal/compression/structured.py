"""``hal.prune``: structured (channel) pruning on HAL's graph.

    small = hal.prune(model, ratio=0.5)                     # half of every prunable group's channels
    print(small.compression)                                # per layer FLOPs, params, channels, why
    small = hal.prune(model, ratio=0.5, importance="bn_gamma", round_to=8, exclude=["4.*"])
    small = hal.prune(model, ratio=0.5, keep_residual=True)  # the residual streams stay whole

The channels that must go together are found by ``hal.passes.channels`` (through BatchNorm,
activations, residual adds, Concat, depthwise convolutions, Flatten into Gemm, attention heads),
the weakest units of each group by ``importance`` are removed by
``hal.passes.prune_channels``: the tensors really shrink, so every backend runs fewer FLOPs.
Whatever the analysis cannot follow is left as it is, with the reason in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from hal.compression import cost
from hal.errors import HalError, ModelError, OptionError
from hal.frontends import to_model
from hal.ir import shapes as S
from hal.ir.attributes import attribute
from hal.ir.graph import const
from hal.ir.model import Model
from hal.passes.channel_allocation import select_global
from hal.passes.channel_graph import ChannelGraph
from hal.passes.channels import analyze
from hal.passes.prune_channels import IMPORTANCE, PruneChannels, Selection, select

__all__ = ["PruneReport", "prune"]

#: how ``ratio`` is spread over the channel groups
ALLOCATIONS = {"uniform": select, "global": select_global}


def prune(model: Any, ratio: float = 0.5, structured: bool = True, importance: str = "l1",
          exclude: Sequence[str] | str = (), round_to: int | None = None,
          keep_residual: bool = False, allocation: str = "uniform", *,
          input_shape: Any = None, example_input: Any = None) -> Model:
    """A copy of ``model`` (anything ``hal.compile`` takes) with ``ratio`` of the channels of
    every prunable group removed; ``model`` itself is not modified.

    ``ratio``: the fraction of each group's channels (or attention heads) removed, strictly
    between 0 and 1, rounded half up, at least one kept. ``importance``: which go -- "l1" or
    "l2", the norm of each output channel's weights summed over the group's producers, or
    "bn_gamma", ``|gamma|`` of the BatchNormalizations on the group. ``exclude``: fnmatch
    patterns of node or initializer names whose tensors keep their shape. ``round_to``: round
    every kept channel count up to a multiple of this (8 for hardware-friendly widths).
    ``structured`` must be True (zeros inside tensors are ``hal.sparsify``).
    ``allocation``: "uniform", ``ratio`` of every group; or "global", ``ratio`` of all the
    prunable channels together, each group keeping those whose importance relative to its
    group's mean ranks high across the network (``hal.passes.channel_allocation``).

    The model's inputs and outputs keep their shapes. The result's ``compression`` is a
    ``PruneReport``: FLOPs, parameters and channels per layer before and after, and why each
    layer left alone was.
    """
    ratio, importance, exclude, round_to = _check(ratio, structured, importance, exclude,
                                                  round_to)
    if not isinstance(keep_residual, bool):
        raise OptionError(f"keep_residual must be True or False, got {keep_residual!r}")
    if allocation not in ALLOCATIONS:
        raise OptionError(f"allocation={allocation!r} is not one HAL knows; use "
                          f"allocation='uniform' (ratio of every group) or 'global' (ratio of "
                          f"all channels together, importance deciding per group)")
    src = to_model(model, input_shape=input_shape, example_input=example_input)
    out = src.copy()
    cg = analyze(out.ir, exclude)
    sel = ALLOCATIONS[allocation](cg, ratio, importance, round_to, keep_residual)
    before = _counts(src)
    PruneChannels(cg, sel.kept)(out.ir)
    _check_result(src, out)
    out.compression = PruneReport.build(src, out, cg, sel, before, dict(
        ratio=ratio, importance=importance, exclude=list(exclude), round_to=round_to,
        keep_residual=keep_residual, allocation=allocation))
    return out


# -- options ---------------------------------------------------------------------------------
def _check(ratio, structured, importance, exclude, round_to):
    if structured is not True:
        raise OptionError("hal.prune removes whole channels (structured=True); for zeros "
                          "inside the tensors (unstructured or 2:4) use "
                          "hal.sparsify(model, sparsity=...)")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) \
            or not 0 < float(ratio) < 1:
        raise OptionError(f"ratio is the fraction of each group's channels to remove, strictly "
                          f"between 0 and 1 (ratio=0.5 removes half); got {ratio!r}")
    if importance not in IMPORTANCE:
        raise OptionError(f"importance={importance!r} is not one HAL knows; use "
                          f"importance='l1' or 'l2' (norm of each output channel's weights) or "
                          f"'bn_gamma' (|gamma| of the following BatchNormalization)")
    if isinstance(exclude, str):
        exclude = (exclude,)
    try:
        exclude = tuple(exclude)
    except TypeError:
        exclude = (exclude,)
    if not all(isinstance(p, str) for p in exclude):
        raise OptionError(f"exclude takes fnmatch patterns of node or initializer names (str), "
                          f"e.g. exclude=['4.*', '9/Gemm']; got {exclude!r}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int)
                                 or round_to < 1):
        raise OptionError(f"round_to must be a positive int (e.g. 8: kept channel counts are "
                          f"multiples of 8) or None; got {round_to!r}")
    return float(ratio), importance, exclude, round_to


def _check_result(src: Model, out: Model) -> None:
    """The pruned graph must validate, pass strict ONNX shape inference and keep the outputs'
    shapes: anything else is a bug of the analysis, said so."""
    import onnx

    from hal.ir.validate import validate

    try:
        validate(out)
        onnx.shape_inference.infer_shapes(out.to_proto(), check_type=True, strict_mode=True,
                                          data_prop=True)
    except Exception as exc:  # noqa: BLE001 - reported as HAL's own fault below
        raise HalError(f"hal.prune produced an invalid graph ({type(exc).__name__}: "
                       f"{str(exc)[:300]}); this is a bug in HAL's channel analysis. Leave the "
                       f"layer it names alone with exclude=[...] meanwhile") from exc
    a, b = S.infer(src.to_proto()), S.infer(out.to_proto())
    for v in src.graph.outputs:
        if a.get(v.name, (None,))[0] != b.get(v.name, (None,))[0]:
            raise HalError(f"hal.prune changed the shape of output {v.name!r}; this is a bug in "
                           f"HAL's channel analysis")


# -- the report ------------------------------------------------------------------------------
def _counts(model: Model) -> dict:
    try:
        layers = cost.layers(model)
    except ModelError:
        layers = []
    return {"layers": {c.index: c for c in layers}, "params": cost.params(model)}


def _channels(node) -> tuple[int | None, int | None]:
    """(output, input) channels of a Conv/Gemm/MatMul from its weight; None without one."""
    op = node.op_type.removeprefix("Fused")
    w = const(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None:
        return None, None
    if op == "Conv":
        return w.shape[0], w.shape[1] * int(attribute(node, "group", 1))
    if op == "ConvTranspose":
        return w.shape[1] * int(attribute(node, "group", 1)), w.shape[0]
    if op == "Gemm" and w.ndim == 2:
        tb = int(attribute(node, "transB", 0))
        return (w.shape[0], w.shape[1]) if tb else (w.shape[1], w.shape[0])
    if op == "MatMul" and w.ndim >= 2:
        return w.shape[-1], w.shape[-2]
    return None, None


def _ratio(before, after) -> float | None:
    return round(before / after, 3) if before and after else None


def _num(x, digits: int = 3) -> str:
    if x is None:
        return "?"
    if x >= 1e6:
        return f"{x / 1e6:.{digits}g}M"
    if x >= 1e3:
        return f"{x / 1e3:.{digits}g}k"
    return f"{x:g}"


@dataclass
class PruneReport:
    """What ``hal.prune`` did: ``rows`` (one dict per Conv/Gemm/MatMul layer: channels, FLOPs
    at batch 1 and parameters before and after, and why a layer was left alone), ``groups``
    (one dict per channel group), ``totals`` and the ``settings`` it ran with. ``str()`` is a
    table; ``to_dict()`` all of it as JSON-able data."""

    model: str
    settings: dict
    rows: list = field(default_factory=list)
    groups: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)

    kind = "prune"

    @classmethod
    def build(cls, src: Model, out: Model, cg: ChannelGraph, sel: Selection, before: dict,
              settings: dict) -> PruneReport:
        after = _counts(out)
        group_of = {}  # output value name -> group ids on its tracked axes
        for name, tracks in cg.tracks.items():
            group_of[name] = [s.group for segs in tracks.values() for s in segs
                              if s.group is not None]

        def status(gid) -> tuple[str, str]:
            g = cg.groups[gid]
            if g.reasons:
                more = f" (and {len(g.reasons) - 1} more)" if len(g.reasons) > 1 else ""
                return "left alone", g.reasons[0] + more
            if gid in sel.skipped:
                return "kept", sel.skipped[gid]
            return "pruned", ""

        rows = []
        nodes_after = list(out.graph)
        for i, node in enumerate(src.graph):
            if i not in before["layers"]:
                continue
            b, a = before["layers"][i], after["layers"].get(i)
            new = nodes_after[i]
            (ob, ib), (oa, ia) = _channels(node), _channels(new)
            gids = group_of.get(new.outputs[0].name, [])
            if node.name in cg.notes:
                state, why = "left alone", cg.notes[node.name]
            elif gids:
                state, why = status(gids[0])
            else:
                state, why = "left alone", "its output channels are not tracked"
            if state != "pruned" and (ia != ib or (a and a.flops != b.flops)):
                state, why = "input pruned", f"output channels kept: {why}"
            rows.append({"layer": b.name, "op": b.op, "group": gids[0] if gids else None,
                         "out_channels": [oa, ob], "in_channels": [ia, ib],
                         "flops_before": b.flops, "flops_after": a.flops if a else None,
                         "params_before": b.params, "params_after": a.params if a else None,
                         "status": state, "reason": why})
        groups = []
        for gid, g in cg.groups.items():
            state, why = status(gid)
            kept = sel.kept.get(gid)
            members = sorted({e.node.name for e in cg.edits_of(gid)} | set(g.names()))
            groups.append({"group": gid, "producers": g.names(), "members": members,
                           "channels": [g.size if kept is None else len(kept), g.size],
                           "unit": g.block, "joins": list(g.joins), "status": state, "reasons": list(g.reasons)
                           if g.reasons else ([why] if why else []),
                           "kept": None if kept is None else [int(c) for c in kept]})
        fb = sum(r["flops_before"] or 0 for r in rows)
        fa = sum(r["flops_after"] or 0 for r in rows)
        ch_total = sum(g.size for g in cg.groups.values() if g.prunable)
        ch_kept = sum(len(sel.kept[gid]) if gid in sel.kept else g.size
                      for gid, g in cg.groups.items() if g.prunable)
        totals = {"flops_before": fb, "flops_after": fa, "flops_ratio": _ratio(fb, fa),
                  "params_before": before["params"], "params_after": after["params"],
                  "params_ratio": _ratio(before["params"], after["params"]),
                  "groups": len(cg.groups), "groups_pruned": len(sel.kept),
                  "groups_left_alone": sum(1 for g in cg.groups.values() if not g.prunable),
                  "prunable_channels": [ch_kept, ch_total]}
        if any(r["flops_before"] is None for r in rows):
            totals["flops_note"] = "some layers' shapes are unknown: their FLOPs are not counted"
        return cls(src.name, settings, rows, groups, totals)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": self.model, "settings": dict(self.settings),
                "layers": [dict(r) for r in self.rows], "groups": [dict(g) for g in self.groups],
                "totals": dict(self.totals)}

    @property
    def left_alone(self) -> list[dict]:
        """The layers left as they were, each with why."""
        return [r for r in self.rows if r["status"] == "left alone"]

    def __str__(self) -> str:
        s, t = self.settings, self.totals
        opts = f"ratio {s['ratio']}, importance {s['importance']}"
        if s.get("round_to"):
            opts += f", round_to {s['round_to']}"
        if s.get("exclude"):
            opts += f", exclude {s['exclude']}"
        if s.get("keep_residual"):
            opts += ", keep_residual"
        if s.get("allocation", "uniform") != "uniform":
            opts += f", allocation {s['allocation']}"
        head = ["layer", "op", "out ch", "in ch", "FLOPs (batch 1)", "params", "status"]
        body = []
        for r in self.rows:
            def ch(pair):
                a, b = pair
                return "-" if b is None else (f"{b}" if a == b else f"{a}/{b}")

            def change(before, after):
                if before is None:
                    return "?"
                if after == before:
                    return _num(before)
                return f"{_num(before)} -> {_num(after)}"

            state = r["status"] + (f": {r['reason']}" if r["reason"] and r["status"] != "pruned"
                                   else "")
            body.append([r["layer"], r["op"], ch(r["out_channels"]), ch(r["in_channels"]),
                         change(r["flops_before"], r["flops_after"]),
                         change(r["params_before"], r["params_after"]), state])
        fr, pr = t.get("flops_ratio"), t.get("params_ratio")
        body.append(["total", "", "", "", f"{_num(t['flops_before'])} -> "
                     f"{_num(t['flops_after'])}" + (f" ({fr:.2f}x fewer)" if fr else ""),
                     f"{_num(t['params_before'])} -> {_num(t['params_after'])}"
                     + (f" ({pr:.2f}x fewer)" if pr else ""), ""])
        widths = [max(len(str(row[i])) for row in [head] + body) for i in range(len(head) - 1)]
        lines = [f"hal.prune {self.model!r}: {opts}"]
        for row in [head] + body:
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        kept, total = t["prunable_channels"]
        lines.append(f"groups: {t['groups_pruned']} of {t['groups']} pruned, "
                     f"{t['groups_left_alone']} left alone; prunable channels kept "
                     f"{kept} of {total}")
        for g in self.groups:
            if g["status"] != "pruned":
                who = ", ".join(g["producers"][:3]) + (" ..." if len(g["producers"]) > 3 else "")
                lines.append(f"  group {g['group']} ({who}; {g['channels'][1]} channels) "
                             f"{g['status']}: " + "; ".join(g["reasons"]))
        return "\n".join(lines)
