"""Compiling a model on every candidate backend of a kind, checking each against
cpu@reference and timing the ones that agree, interleaved, with ``hal compare``'s loop."""

from __future__ import annotations

import gc
import logging
import statistics
import time
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from hal import compiler
from hal.backend import Backend, CompileOptions
from hal.errors import HalError, InputError, ModelError, OptionError
from hal.ir.model import Model
from hal.registry import REGISTRY

log = logging.getLogger("hal")

REFERENCE = "cpu@reference"
#: a candidate's outputs may differ from the reference by this much, relative to the
#: reference's largest magnitude (at least 1): fp32 arithmetic in another order passes,
#: a backend quietly computing in bf16 or fp16 does not
TOLERANCE = 1e-3
#: timing is split into this many rounds, candidates in a rotated order in each
ROUNDS = 3
#: backend options tried as candidates of their own besides the backend's defaults (where
#: the caller did not set them): one intra-op thread often wins for small batches, where
#: waking a pool costs more than the work it shares
VARIANTS: dict[str, list[dict]] = {"ort": [{"intra_op_num_threads": 1}]}


@dataclass
class Candidate:
    """One backend's try: its device, its compiled model, and how it fared."""

    backend: str
    device: str = ""
    options: dict = field(default_factory=dict)  # the variant's own backend options
    status: str = "pending"  # "measured", "rejected" (outputs differ), "failed", "unusable"
    reason: str = ""
    compile_s: float | None = None
    max_err: float | None = None
    times_ms: list[float] = field(default_factory=list)
    compiled: Any = None
    warnings: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return " ".join([self.backend, *(f"{k}={v}" for k, v in self.options.items())])

    @property
    def p50_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"backend": self.label, "device": self.device,
                               "status": self.status}
        if self.options:
            out["options"] = self.options
        if self.times_ms:
            p50 = self.p50_ms
            out.update(p50_ms=round(p50, 5), runs=len(self.times_ms),
                       mad_ms=round(statistics.median(abs(t - p50) for t in self.times_ms), 5))
        if self.compile_s is not None:
            out["compile_s"] = round(self.compile_s, 3)
        if self.max_err is not None:
            out["max_err"] = float(f"{self.max_err:.3g}")
        if self.reason:
            out["reason"] = self.reason
        return out


def devices_for(kind: str, index: int, backends: list[Backend],
                given: dict) -> list[Candidate]:
    """A candidate per backend serving ``kind``: its usable, real device at ``index``, or
    why it has none (unusable, simulated, another name for a device of another kind); and
    one per ``VARIANTS`` entry whose options the caller (``given``) left out."""
    out = []
    extra = set(given) - {f.name for f in fields(CompileOptions)} - {"extra"}
    for b in backends:
        c = Candidate(b.name)
        if extra - set(b.options):
            c.status = "unusable"
            c.reason = f"does not take the option(s) {sorted(extra - set(b.options))}"
        elif b.name == "reference":
            c.status, c.reason = "unusable", "the oracle every candidate is checked against"
        elif b.default_precision != "fp32":
            c.status, c.reason = "unusable", f"computes in {b.default_precision} by default"
        else:
            try:
                dev = REGISTRY.resolve(f"{kind}:{index}@{b.name}")
                c.device = dev.string
                if dev.simulated:
                    c.status, c.reason = "unusable", "simulated: never serves a bare kind"
                elif dev.info.kind != kind:
                    c.status, c.reason = "unusable", f"another name for {dev.string}"
            except HalError as exc:
                c.status, c.reason = "unusable", str(exc).split(". Usable devices")[0]
        out.append(c)
        if c.status == "pending":
            out += [Candidate(b.name, c.device, dict(v)) for v in VARIANTS.get(b.name, [])
                    if not set(v) & set(given) and set(v) <= set(b.options)]
    return out


def reference_outputs(model: Model, inputs: list[np.ndarray]) -> tuple[list | None, str]:
    """cpu@reference's outputs on ``inputs``, or (None, why there are none)."""
    try:
        ref = compiler.compile(model, REFERENCE)
        return [np.asarray(y) for y in ref(*inputs)], ""
    except Exception as exc:  # noqa: BLE001 - reported with the decision
        return None, f"{type(exc).__name__}: {exc}"


def disagreement(outs: list, ref: list) -> tuple[float, str]:
    """(largest error relative to the reference's scale, why it is too large or "")."""
    if len(outs) != len(ref):
        return float("inf"), f"{len(outs)} outputs, the reference has {len(ref)}"
    worst = 0.0
    for i, (y, r) in enumerate(zip(outs, ref)):
        y = np.asarray(y)
        if y.shape != r.shape:
            return float("inf"), f"output {i} has shape {list(y.shape)}, the reference " \
                                 f"{list(r.shape)}"
        if not r.size:
            continue
        if not np.issubdtype(r.dtype, np.floating):
            if not np.array_equal(y, r):
                return float("inf"), f"output {i} ({r.dtype}) differs from the reference"
            continue
        scale = max(1.0, float(np.nanmax(np.abs(r))))
        diff = np.abs(y.astype(np.float64) - r.astype(np.float64))
        err = float("nan") if np.isnan(diff).any() else float(diff.max()) / scale
        if not err <= TOLERANCE:
            return err, f"output {i} differs from cpu@reference by {err:.2g} (relative to its " \
                        f"largest value; fp32-accurate is within {TOLERANCE:g})"
        worst = max(worst, err)
    return worst, ""


def try_candidates(cands: list[Candidate], model: Model, options: dict,
                   inputs: list[np.ndarray], ref: list | None) -> None:
    """Compile each usable candidate and check its first outputs against ``ref``; the ones
    that fail or disagree are released with the reason."""
    for c in cands:
        if c.status != "pending":
            continue
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                c.compiled = compiler.compile(model, c.device, **options, **c.options)
            c.warnings = caught
            c.compile_s = time.perf_counter() - t0
            outs = c.compiled(*inputs)
            c.compiled.sync()
        except (OptionError, InputError, ModelError):
            raise  # the caller's mistake, the same on every candidate
        except Exception as exc:  # noqa: BLE001 - a candidate failing is a result
            c.status, c.reason = "failed", f"{type(exc).__name__}: {exc}"[:400]
            c.compiled = None
            continue
        if ref is not None:
            c.max_err, why = disagreement(outs, ref)
            if why:
                c.status, c.reason, c.compiled = "rejected", why, None
                continue
        c.status = "measured"
    gc.collect()


def time_candidates(cands: list[Candidate], inputs: list[np.ndarray], budget_s: float) -> None:
    """Time the agreeing candidates: a short warm-up, then ``ROUNDS`` rounds of
    ``budget_s / ROUNDS`` each, in a rotated order, so drift hits all alike."""
    from hal.comparison.rounds import device_order
    from hal.comparison.timing import timed_calls

    live = [c for c in cands if c.status == "measured"]
    for c in live:
        for _ in range(2):
            c.compiled(*inputs)
        c.compiled.sync()
    by_name = {c.label: c for c in live}
    for r in range(ROUNDS):
        for name in device_order(list(by_name), r):
            c = by_name[name]
            fn = c.compiled
            c.times_ms += timed_calls(lambda: fn(*inputs), budget_s / ROUNDS, max_runs=10_000,
                                      min_runs=1, sync=fn.sync)
