"""ONNX's operator test cases, run through HAL's public API on any device.

``run_conformance("cpu@reference")`` takes every case of
``onnx.backend.test.case.node.collect_testcases()`` whose nodes are all ops the
device's backend declares, loads it with ``hal.load`` (converted to HAL's
opset), compiles it with ``fallback=None`` and checks every data set with the
case's own tolerances. Cases that cannot apply are counted apart, with reasons:

- ``not_convertible``: ONNX's version converter cannot bring the case to HAL's opset;
- ``not_applicable``: the case feeds sequences, optionals or maps, not tensors;
- ``declined``: the backend's ``supports()`` refuses a node, saying why (a dtype or
  attribute combination it does not run) — reported, never hidden.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

import hal
from hal.errors import HalError, ModelError, UnsupportedOp

STATUSES = ("passed", "failed", "declined", "not_convertible", "not_applicable")


@dataclass
class CaseResult:
    name: str
    op: str
    status: str
    detail: str = ""


@dataclass
class ConformanceReport:
    device: str
    declared_ops: int
    results: list[CaseResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def passed(self) -> int:
        return self.count("passed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def run(self) -> int:
        return self.passed + self.failed

    def per_op(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for r in self.results:
            out[r.op][r.status] += 1
        return dict(out)

    def summary(self) -> str:
        ops_run = {r.op for r in self.results if r.status in ("passed", "failed")}
        rate = f"{100 * self.passed / self.run:.1f}%" if self.run else "n/a"
        return (f"ONNX conformance on {self.device}: {self.declared_ops} declared ops, "
                f"{len(ops_run)} with runnable cases; {self.run} cases run, {self.passed} passed, "
                f"{self.failed} failed ({rate}); {self.count('declined')} declined by "
                f"supports(), {self.count('not_convertible')} not convertible to opset "
                f"{hal.DEFAULT_OPSET}, {self.count('not_applicable')} not applicable "
                f"(non-tensor values)")

    def failures_text(self, limit: int = 40) -> str:
        bad = [r for r in self.results if r.status == "failed"]
        lines = [f"{r.name} [{r.op}]: {r.detail}" for r in bad[:limit]]
        if len(bad) > limit:
            lines.append(f"... and {len(bad) - limit} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"device": self.device, "declared_ops": self.declared_ops,
                "counts": {s: self.count(s) for s in STATUSES},
                "per_op": {k: dict(v) for k, v in sorted(self.per_op().items())}}


@functools.lru_cache(maxsize=1)
def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(collect_testcases())


def _ops(graph: onnx.GraphProto) -> set[tuple[str, str]]:
    ops = set()
    for n in graph.node:
        ops.add((n.domain, n.op_type))
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                ops |= _ops(a.g)
            for g in a.graphs:
                ops |= _ops(g)
    return ops


def _tensor_typed(graph: onnx.GraphProto) -> bool:
    return all(v.type.HasField("tensor_type") for v in list(graph.input) + list(graph.output))


def _array(v):
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, np.ndarray) or np.isscalar(v) or isinstance(v, np.generic):
        return np.asarray(v)
    return None


# ONNX computes the expected outputs of fp16/bf16 cases with numpy, step by step in that
# precision; a backend may accumulate in fp32 (ONNX allows it), which moves results by an
# ulp or two. Half-precision outputs therefore get at least 2 ulps of relative tolerance.
_LOW_PRECISION_RTOL = {"float16": 2 * 2.0 ** -10, "bfloat16": 2 * 2.0 ** -7}


def _compare(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> str:
    rtol = max(rtol, _LOW_PRECISION_RTOL.get(expected.dtype.name, 0.0))
    if expected.dtype != actual.dtype:
        return f"dtype {actual.dtype}, expected {expected.dtype}"
    if expected.shape != actual.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    if expected.dtype.kind in "fc" or expected.dtype.name in ("bfloat16",) \
            or expected.dtype.name.startswith("float"):
        try:
            np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                       rtol=rtol, atol=atol, equal_nan=True)
        except AssertionError as exc:
            return " ".join(str(exc).split())[:300]
        return ""
    if not np.array_equal(expected, actual):
        diff = int(np.sum(expected != actual))
        return f"{diff} of {expected.size} elements differ"
    return ""


def run_case(case, device: str, declared: frozenset[str]) -> CaseResult | None:
    """One ONNX case on ``device``; None when the case uses ops the backend does not declare."""
    ops = _ops(case.model.graph)
    if not ops or any(d not in ("", "ai.onnx") or op not in declared for d, op in ops):
        return None
    op = "+".join(sorted({o for _, o in ops}))
    if not _tensor_typed(case.model.graph):
        return CaseResult(case.name, op, "not_applicable", "sequence/optional/map values")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = hal.load(case.model)
    except ModelError as exc:
        return CaseResult(case.name, op, "not_convertible", str(exc).split(": ", 1)[-1][:200])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = hal.compile(model, device, fallback=None)
    except UnsupportedOp as exc:
        return CaseResult(case.name, op, "declined", str(exc)[:300])
    except HalError as exc:
        return CaseResult(case.name, op, "failed", f"compile: {exc}"[:400])
    except Exception as exc:  # a crash in a backend is a failure, with its type
        return CaseResult(case.name, op, "failed", f"compile crashed: {type(exc).__name__}: "
                                                   f"{exc}"[:400])
    for inputs, expected in case.data_sets:
        arrays = [_array(v) for v in inputs]
        wanted = [_array(v) for v in expected]
        if any(a is None for a in arrays + wanted):
            return CaseResult(case.name, op, "not_applicable", "non-tensor test data")
        try:
            with np.errstate(all="ignore"):
                outs = compiled(*arrays)
        except Exception as exc:
            return CaseResult(case.name, op, "failed", f"run: {type(exc).__name__}: {exc}"[:400])
        if len(outs) < len(wanted):
            return CaseResult(case.name, op, "failed",
                              f"{len(outs)} outputs, expected {len(wanted)}")
        for i, (e, a) in enumerate(zip(wanted, outs)):
            problem = _compare(e, np.asarray(a), case.rtol, case.atol)
            if problem:
                return CaseResult(case.name, op, "failed", f"output {i}: {problem}")
    return CaseResult(case.name, op, "passed")


def run_conformance(device: str, ops: set[str] | None = None) -> ConformanceReport:
    """Every ONNX operator case for the ops ``device`` declares (or ``ops``, a subset)."""
    dev = hal.device(device)
    declared = frozenset(dev.backend.ops)
    if ops is not None:
        declared = declared & frozenset(ops)
    report = ConformanceReport(dev.string, len(dev.backend.ops))
    for case in _cases():
        if case.kind != "node":
            continue
        result = run_case(case, dev.string, declared)
        if result is not None:
            report.results.append(result)
    return report
