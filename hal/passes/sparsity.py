"""Magnitude sparsity on the IR: which weights can be pruned, the options that say how, and
``SparsifyWeights``, the pass writing the zeros into the initializers.

Prunable weights are the constant float weights of Conv, Gemm and MatMul (and HAL's fused
Conv/Gemm): never biases, BatchNorm parameters or anything a user can feed at run time.
N:M groups run along each weight's reduction axis, the input channels, as sparse tensor
cores expect: axis 1 of a Conv weight [O, I/group, kH, kW] (so a group is M consecutive
input channels at one output channel and kernel position), the K axis of a Gemm/MatMul
weight (axis 1 of [N, K] with transB=1, axis 0 of [K, N]; axis -2 of a MatMul's [..., K, N]).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import PassResult

from hal.errors import ModelError, OptionError
from hal.ir.attributes import attribute
from hal.ir.graph import const
from hal.ir.schemas import FUSED_BASE, is_fused, is_onnx
from hal.passes.base import HalPass
from hal.passes.sparsity_masks import SCOPES, magnitude_masks, nm_mask

PRUNABLE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class PrunableWeight:
    """A weight sparsity may prune: its initializer, the first node reading it, that node's
    op and the weight's reduction (input-channel) axis."""

    name: str
    node: str
    op: str
    axis: int
    shape: tuple[int, ...]


def _op(node: ir.Node) -> str | None:
    if is_onnx(node, *PRUNABLE_OPS):
        return node.op_type
    return FUSED_BASE[node.op_type] if is_fused(node) else None


def _reduction_axis(node: ir.Node, op: str, ndim: int) -> int:
    if op == "Conv":
        return 1
    if op == "Gemm":
        return 1 if attribute(node, "transB", 0) else 0
    return max(ndim - 2, 0)  # MatMul: [..., K, N], or a [K] vector


def prunable_weights(graph: ir.Graph) -> list[PrunableWeight]:
    """Every prunable weight of ``graph``, in graph order, each once."""
    found: dict[str, PrunableWeight] = {}
    for node in graph:
        op = _op(node)
        if op is None or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        value = node.inputs[1]
        array = const(value)
        if array is None or array.dtype.kind != "f" or value.name not in graph.initializers:
            continue
        weight = PrunableWeight(value.name, node.name or op, op,
                                _reduction_axis(node, op, array.ndim), tuple(array.shape))
        seen = found.setdefault(weight.name, weight)
        if seen.axis != weight.axis:  # one weight read along two axes: N:M must refuse it
            found[weight.name] = PrunableWeight(seen.name, seen.node, seen.op, -1, seen.shape)
    return list(found.values())


def parse_pattern(pattern: str | None) -> tuple[int, int] | None:
    """``"N:M"`` as (N, M); None stays None. OptionError unless 0 < N < M."""
    if pattern is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern) if isinstance(pattern, str) \
        else None
    if match is None or not 0 < int(match[1]) < int(match[2]):
        raise OptionError(f"pattern must be a string 'N:M' with 0 < N < M (keep N of every M "
                          f"weights, e.g. '2:4'), or None for unstructured sparsity; got "
                          f"{pattern!r}")
    return int(match[1]), int(match[2])


def check_sparsity(sparsity: object, what: str = "sparsity") -> float:
    """``sparsity`` as a float in [0, 1), else OptionError."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)) \
            or not 0 <= sparsity < 1:
        raise OptionError(f"{what} is the fraction of weights set to zero, a number in [0, 1) "
                          f"(0.5 prunes half); got {sparsity!r}")
    return float(sparsity)


def check_scope(scope: object) -> str:
    if scope not in SCOPES:
        raise OptionError(f"scope must be 'global' (one magnitude threshold over every weight) "
                          f"or 'layer' (the same sparsity in each weight); got {scope!r}")
    return scope


def select(weights: list[PrunableWeight], exclude: Iterable[str]) -> list[PrunableWeight]:
    """``weights`` less those whose initializer or node name matches an ``exclude`` pattern
    (fnmatch); a pattern matching no prunable weight is an OptionError (a typo, most often)."""
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    for p in patterns:
        if not isinstance(p, str):
            raise OptionError(f"exclude takes weight or node names (fnmatch patterns), got {p!r}")
        if not any(fnmatch.fnmatchcase(w.name, p) or fnmatch.fnmatchcase(w.node, p)
                   for w in weights):
            names = [w.name for w in weights]
            raise OptionError(f"exclude pattern {p!r} matches no prunable weight; they are "
                              f"{names[:12]}{' ...' if len(names) > 12 else ''} (weights) of "
                              f"the nodes {[w.node for w in weights][:12]}")
    return [w for w in weights
            if not any(fnmatch.fnmatchcase(w.name, p) or fnmatch.fnmatchcase(w.node, p)
                       for p in patterns)]


def nm_unfit(weight: PrunableWeight, nm: tuple[int, int]) -> str | None:
    """Why ``weight`` cannot take an N:M pattern (its reduction axis is not a multiple of M),
    or None when it can."""
    if weight.axis < 0:
        return "read along different axes by different nodes"
    length = weight.shape[weight.axis] if weight.shape else 0
    if length % nm[1]:
        return (f"its input-channel axis (axis {weight.axis}) has {length} entries, not a "
                f"multiple of {nm[1]}")
    return None


def compute_masks(arrays: Mapping[str, np.ndarray], weights: list[PrunableWeight],
                  sparsity: float, scope: str,
                  nm: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """The masks (True: kept) of ``weights`` whose values are ``arrays``: N:M when ``nm``
    is given (weights that cannot take it are left out), else by magnitude."""
    if nm is not None:
        return {w.name: nm_mask(arrays[w.name], nm[0], nm[1], w.axis)
                for w in weights if nm_unfit(w, nm) is None}
    return magnitude_masks({w.name: arrays[w.name] for w in weights}, sparsity, scope)


class SparsifyWeights(HalPass):
    """Zero the smallest-magnitude prunable weights (see the module docstring); ``masks``
    holds what it kept, ``skipped`` the weights an N:M pattern could not take and why."""

    hal_name = "SparsifyWeights"

    def __init__(self, sparsity: float, scope: str = "global", pattern: str | None = None,
                 exclude: Iterable[str] = ()) -> None:
        super().__init__()
        self.sparsity, self.scope = check_sparsity(sparsity), check_scope(scope)
        self.nm = parse_pattern(pattern)
        self.exclude = exclude
        self.masks: dict[str, np.ndarray] = {}
        self.skipped: dict[str, str] = {}

    def call(self, model: ir.Model) -> PassResult:
        g = model.graph
        found = prunable_weights(g)
        if not found:
            raise ModelError(f"{g.name or 'the model'} has no constant float weight of a "
                             f"Conv, Gemm or MatMul: nothing to sparsify")
        weights = select(found, self.exclude)
        if self.nm is not None:
            self.skipped = {w.name: why for w in weights
                            if (why := nm_unfit(w, self.nm)) is not None}
        arrays = {w.name: g.initializers[w.name].const_value.numpy() for w in weights}
        self.masks = compute_masks(arrays, weights, self.sparsity, self.scope, self.nm)
        for name, mask in self.masks.items():
            value = g.initializers[name]
            value.const_value = ir.tensor(np.where(mask, arrays[name], 0).astype(
                arrays[name].dtype), name=name)
        zeros = sum(int(m.size - m.sum()) for m in self.masks.values())
        self.detail = f"{zeros} weights zeroed in {len(self.masks)} weights"
        return PassResult(model, bool(self.masks))
