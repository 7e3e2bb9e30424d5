"""``hal.sparsify``: magnitude pruning to zeros, unstructured or N:M, and ``Sparsity``, the
training callback that reaches a sparsity gradually (``hal.compression.sparsity_schedule``).

    sparse = hal.sparsify(model, sparsity=0.5)                 # one threshold over all weights
    sparse = hal.sparsify(model, sparsity=0.8, scope="layer")  # 80 % in every weight
    sparse = hal.sparsify(model, pattern="2:4")                # 2 of every 4 input channels
    print(sparse.compression)                                  # per weight: weights, zeros

The zeros pay in file size (a zipped .onnx) and on sparse hardware (2:4 on sparse tensor
cores); HAL's dense kernels run a sparse model no faster (docs/sparsity.md has the figures).
Which weights are prunable and along which axis N:M groups run: ``hal.passes.sparsity``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from hal.compression.sparsity_report import SparsityReport, file_bytes, row
from hal.compression.sparsity_schedule import Sparsity
from hal.errors import OptionError
from hal.ir.model import Model
from hal.passes.sparsity import (SparsifyWeights, check_scope, check_sparsity, parse_pattern,
                                 prunable_weights)

__all__ = ["Sparsity", "SparsityReport", "sparsify", "sparsity_of"]

log = logging.getLogger("hal")


def resolve_sparsity(sparsity: float | None, pattern: str | None) -> float:
    """The sparsity asked for: ``sparsity`` (default 0.5), or 1 - N/M for an N:M pattern,
    which a different explicit ``sparsity`` contradicts (OptionError)."""
    nm = parse_pattern(pattern)
    if nm is None:
        return check_sparsity(0.5 if sparsity is None else sparsity)
    implied = 1 - nm[0] / nm[1]
    if sparsity is not None and abs(check_sparsity(sparsity) - implied) > 1e-9:
        raise OptionError(f"pattern {pattern!r} prunes {implied:.4g} of the weights, but "
                          f"sparsity={sparsity!r} was asked: pass one or the other")
    return implied


def sparsify(model: Any, sparsity: float | None = None, scope: str = "global",
             pattern: str | None = None, exclude: Iterable[str] = (), **model_kw: Any) -> Model:
    """A copy of ``model`` whose smallest-magnitude Conv/Gemm/MatMul weights are zero.

    ``sparsity``: the fraction of zeros, in [0, 1) (default 0.5); exactly that many weights
    are zeroed, ties broken by position. ``scope``: "global" (one magnitude threshold over
    every prunable weight) or "layer" (the fraction in each). ``pattern``: "N:M" keeps the N
    largest of every M consecutive weights along the input-channel axis (sparsity 1 - N/M);
    a weight whose input channels are not a multiple of M stays dense, said in the report.
    ``exclude``: weight or node names (fnmatch patterns) left dense. ``model``: anything
    ``hal.compile`` takes (``input_shape=``/``example_input=`` as there); it is never modified.
    The result's ``compression`` is a ``SparsityReport``.
    """
    from hal.frontends import to_model

    amount = resolve_sparsity(sparsity, pattern)
    scope = check_scope(scope)
    source = to_model(model, **model_kw)
    sparse = source.copy()
    apply = SparsifyWeights(amount, scope, pattern, exclude)
    apply(sparse.ir)
    for name, why in apply.skipped.items():
        log.warning("sparsify(pattern=%r) leaves %s dense: %s", pattern, name, why)
    sparse.compression = _report(sparse, apply, {"sparsity": amount, "scope": scope,
                                                 "pattern": pattern,
                                                 "exclude": _listed(exclude)}, source)
    return sparse


def _listed(exclude: Iterable[str]) -> list[str]:
    return [exclude] if isinstance(exclude, str) else list(exclude)


def _report(sparse: Model, applied: SparsifyWeights, settings: dict,
            source: Model) -> SparsityReport:
    inits = sparse.graph.initializers
    rows = []
    for w in prunable_weights(sparse.graph):
        note = "" if w.name in applied.masks else \
            f"dense: {applied.skipped[w.name]}" if w.name in applied.skipped else "excluded"
        rows.append(row(w, inits[w.name].const_value.numpy(), note))
    return SparsityReport(rows, settings, {"before": file_bytes(source),
                                           "after": file_bytes(sparse)})


def sparsity_of(model: Model, exclude: Iterable[str] = ()) -> SparsityReport:
    """The zeros in each prunable weight of ``model`` as it is (less ``exclude``), counted from
    the weights: a trained or loaded model's sparsity."""
    from hal.passes.sparsity import select

    weights = select(prunable_weights(model.graph), exclude)
    inits = model.graph.initializers
    rows = [row(w, inits[w.name].const_value.numpy()) for w in weights]
    return SparsityReport(rows)
