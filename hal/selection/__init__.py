"""Measured selection: a bare kind ("cpu", "cuda", "gpu") is served by its fastest backend.

``hal.compile(model, "cpu")`` compiles the model on every usable, real backend of the kind,
checks each one's outputs against cpu@reference (fp32-accurate, ``measure.TOLERANCE``),
times the ones that agree on the actual input shapes (``batch=``) for a short budget each
(``select_budget_s``, default 0.3 s, or ``HAL_SELECT_BUDGET``), and keeps the fastest. The
decision is stored on disk (``hal.selection.cache``) so the next compile of the same model
on the same machine measures nothing. ``compiled.report()["selection"]`` shows the
candidates, their times and why one won.

``select="priority"`` (or ``HAL_SELECT=priority``) keeps the fixed order instead: the usable
backend with the highest priority, as before measured selection, for reproducible runs.
A device string naming its backend (``cpu@ort``) is never measured.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any

from hal import compiler
from hal.backend import CompileOptions
from hal.compiler import CompiledModel
from hal.device import DeviceSpec
from hal.errors import BackendError, OptionError
from hal.ir.model import Model
from hal.registry import REGISTRY
from hal.selection import cache
from hal.selection.measure import (REFERENCE, Candidate, devices_for, reference_outputs,
                                   time_candidates, try_candidates)

log = logging.getLogger("hal")

MODES = ("measured", "priority")
DEFAULT_BUDGET_S = 0.3
_MODEL_OPTIONS = ("input_shape", "example_input")


def select_mode(select: str | None = None) -> str:
    """``select``, else ``HAL_SELECT``, else "measured"; an unknown value is an OptionError."""
    where = "select="
    if select is None:
        select, where = os.environ.get("HAL_SELECT", "").strip() or "measured", "HAL_SELECT="
    if select not in MODES:
        raise OptionError(f"{where}{select!r} is not a selection mode: use 'measured' (time "
                          f"every backend of the kind, keep the fastest) or 'priority' (the "
                          f"fixed order of backend priorities)")
    return select


def compile(model: Any, device: Any = "cpu", *, select: str | None = None,
            batch: int | None = None, select_budget_s: float | None = None,
            **options: Any) -> CompiledModel:
    """Compile ``model`` for ``device`` (see ``hal.compiler.compile`` for the options).

    A bare kind (``"cpu"``, ``"cuda:1"``) is served by measured selection unless ``select``
    (or ``HAL_SELECT``) is "priority". ``batch``: the batch size the candidates are timed at
    (the model's dynamic dims take it; default 1), a part of the cached decision.
    ``select_budget_s``: seconds of timed calls per candidate.
    """
    spec = DeviceSpec.parse(device) if isinstance(device, str) else None
    if spec is None or spec.backend is not None:
        return compiler.compile(model, device, **options)
    mode = select_mode(select)
    if mode == "priority":
        compiled = compiler.compile(model, device, **options)
        compiled.selection = {"mode": "priority", "kind": spec.kind,
                              "winner": compiled.device.string,
                              "why": "select='priority' (or HAL_SELECT=priority): the usable "
                                     "backend of highest priority, nothing measured"}
        return compiled
    return _measured(model, spec, options, _batch(batch), _budget(select_budget_s), False)


def tune(model: Any, device: str = "cpu", batch: int | None = None,
         select_budget_s: float | None = None, force: bool = False,
         **options: Any) -> CompiledModel:
    """Measure the choice for ``device`` (a bare kind) now and store it, so that later
    compiles of ``model`` at ``batch`` reuse it (``hal tune``); ``force`` measures again
    even when a decision is stored."""
    spec = DeviceSpec.parse(device)
    if spec.backend is not None:
        raise OptionError(f"{device!r} names its backend, so there is nothing to choose: tune "
                          f"a bare kind such as {spec.kind!r}")
    return _measured(model, spec, options, _batch(batch), _budget(select_budget_s), force)


def _measured(model: Any, spec: DeviceSpec, options: dict, batch: int, budget_s: float,
              force: bool) -> CompiledModel:
    from hal.frontends import to_model
    from hal.inputs import example_inputs

    t0 = time.perf_counter()
    hal_model = to_model(model, **{k: options.pop(k) for k in _MODEL_OPTIONS if k in options})
    precision = options.get("precision")
    if precision not in (None, "fp32"):
        compiled = compiler.compile(hal_model, str(spec), **options)
        compiled.selection = {"mode": "priority", "kind": spec.kind,
                              "winner": compiled.device.string,
                              "why": f"measured selection checks candidates against the fp32 "
                                     f"reference; precision={precision!r} takes the backend "
                                     f"of highest priority"}
        return compiled
    inputs = example_inputs(hal_model, batch)
    backends = REGISTRY.serving(spec.kind)
    key = cache.make_key(cache.model_hash(hal_model.to_proto().SerializeToString()),
                         [[list(x.shape), str(x.dtype)] for x in inputs],
                         _key_options(options), str(spec), backends)
    entry = None if force else cache.load(key)
    if entry is not None:
        try:
            compiled = compiler.compile(hal_model, entry["winner"], **options,
                                        **entry.get("winner_options", {}))
        except Exception as exc:  # noqa: BLE001 - the stored winner no longer compiles here
            log.warning("the stored choice %s for %r failed (%s); measuring again",
                        entry["winner"], hal_model.name, exc)
        else:
            lookup_s = time.perf_counter() - t0 - compiled.compile_s
            compiled.selection = _report(entry, key, spec, batch, lookup_s=lookup_s)
            return compiled
    cands = devices_for(spec.kind, spec.index or 0, backends, options)
    ref, ref_error = reference_outputs(hal_model, inputs)
    if ref is None:
        log.warning("measured selection of %r: no reference outputs (%s); candidates are "
                    "timed unchecked", hal_model.name, ref_error)
    try_candidates(cands, hal_model, options, inputs, ref)
    time_candidates(cands, inputs, budget_s)
    winner = _winner(cands, hal_model, spec)
    decision = {"winner": winner.device, "winner_options": winner.options,
                "why": _why(winner, cands),
                "candidates": [c.to_dict() for c in cands], "budget_s": budget_s,
                "checked": f"against {REFERENCE}" if ref is not None
                else f"unchecked: {REFERENCE} failed: {ref_error}",
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "measure_s": round(time.perf_counter() - t0, 3)}
    try:
        entry_name = cache.store(key, decision).name
    except OSError as exc:  # a read-only cache costs the next compile a measurement, no more
        log.warning("could not store the selection for %r (%s); set HAL_CACHE_DIR to a "
                    "writable folder to keep it", hal_model.name, exc)
        entry_name = None
    compiled = winner.compiled
    for c in cands:
        c.compiled = None  # the others' sessions and thread pools go now
    for w in winner.warnings:  # the winner's own warnings (a fallback), the others' are noise
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    compiled.selection = _report(decision, key, spec, batch, entry=entry_name)
    return compiled


def _winner(cands: list[Candidate], model: Model, spec: DeviceSpec) -> Candidate:
    timed = [c for c in cands if c.status == "measured" and c.times_ms]
    if not timed:
        why = "; ".join(f"{c.label}: {c.status}: {c.reason}" for c in cands)
        raise BackendError(f"no backend of kind {spec.kind!r} could run {model.name!r} "
                           f"fp32-accurately: {why}. Name a device to see its own error "
                           f"(e.g. {spec.kind}@{cands[0].backend if cands else 'reference'})")
    return min(timed, key=lambda c: c.p50_ms)


def _why(winner: Candidate, cands: list[Candidate]) -> str:
    others = sorted((c for c in cands if c.status == "measured" and c is not winner),
                    key=lambda c: c.p50_ms)
    if not others:
        return f"the only candidate that compiled and agreed with {REFERENCE}"
    nxt = others[0]
    return (f"fastest of {len(others) + 1} candidates agreeing with {REFERENCE}: p50 "
            f"{winner.p50_ms:.4g} ms against {nxt.p50_ms:.4g} ms on {nxt.label} "
            f"({nxt.p50_ms / winner.p50_ms:.2f}x)")


def _report(decision: dict, key: dict, spec: DeviceSpec, batch: int,
            lookup_s: float | None = None, entry: str | None = None) -> dict:
    """``report()["selection"]``: on a cache hit (``lookup_s`` given) nothing was measured;
    ``measure_s`` is 0 and the candidates are those of the stored decision."""
    cached = lookup_s is not None
    return {"mode": "measured", "kind": str(spec), "batch": batch, "inputs": key["inputs"],
            "winner": decision["winner"], "winner_options": decision.get("winner_options", {}),
            "why": decision["why"], "cached": cached,
            "measure_s": 0.0 if cached else decision["measure_s"],
            **({"lookup_s": round(lookup_s, 4)} if cached else {}),
            "measured_at": decision.get("measured_at"), "budget_s": decision.get("budget_s"),
            "checked": decision.get("checked"), "candidates": decision["candidates"],
            **({"entry": entry} if entry else {})}


def _key_options(options: dict) -> dict:
    """The options as the key holds them: defaults spelled out, so that leaving an option
    out and passing its default value are one decision."""
    defaults = CompileOptions()
    full = {"opt_level": defaults.opt_level, "fallback": defaults.fallback, **options}
    full.pop("precision", None)  # only fp32 is measured
    return {k: full[k] for k in sorted(full)}


def _batch(batch: Any) -> int:
    if batch is None:
        return 1
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise OptionError(f"batch must be a positive int (the batch size measured selection "
                          f"times the candidates at), got {batch!r}")
    return batch


def _budget(budget: Any) -> float:
    where = "select_budget_s="
    if budget is None:
        text = os.environ.get("HAL_SELECT_BUDGET", "").strip()
        if not text:
            return DEFAULT_BUDGET_S
        where, budget = "HAL_SELECT_BUDGET=", text
        try:
            budget = float(text)
        except ValueError:
            pass
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise OptionError(f"{where}{budget!r}: give the seconds of timed calls per candidate "
                          f"(a number above 0, e.g. 0.3)")
    return float(budget)
