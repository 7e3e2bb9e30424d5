"""Structured fuzzing of HAL's one path: load, validate, compile, call.

Hypothesis draws each case: a seed model (a zoo model or one of ONNX's own test models), one
mutation of it (``hal.testing.fuzz_mutations``), a device or none (load and validate only)
and, for a model that compiles, a call with good or bad inputs. Every case must end in a
result or a ``HalError`` with a message — never another exception type, a hang (each case
runs under a time bound) or a changed input array. Anything else is a finding.

    python -m hal.testing.fuzz --cases 20000          # the long run (``make fuzz``)

``tests/test_fuzz.py`` runs a short one in the test suite.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import logging
import random
import resource
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

import hal
from hal.errors import HalError
from hal.testing.fuzz_mutations import MUTATIONS

#: the fast CPU backends compiled on besides the reference, each used when usable
FAST_CPU = ("cpu@ort", "cpu@torch", "cpu@jax", "cpu@tf")
#: ways a call's inputs can be wrong or odd; "good" is the model's own inputs
CALLS = ("good", "nan", "readonly", "noncontiguous", "batch0", "dtype", "rank", "shape",
         "list", "missing", "extra", "scalar")


class CaseTimeout(BaseException):
    """A case ran past its bound (a BaseException so no ``except Exception`` swallows it)."""


@dataclass
class Outcome:
    source: str
    mutation: str
    device: str | None
    call: str | None
    result: str  # "ok", the HalError subclass's name, or a finding's description
    message: str = ""
    finding: bool = False
    grew_mb: int = 0  # how far the case raised the process's peak memory

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    def line(self) -> str:
        where = f"{self.source} / {self.mutation} / {self.device or 'load'}"
        if self.call:
            where += f" / call {self.call}"
        return f"{where}: {self.result}: {self.message[:300]}"


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def findings(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.finding]

    def counts(self) -> collections.Counter:
        return collections.Counter(o.result for o in self.outcomes)

    def summary(self) -> str:
        n = len(self.outcomes)
        rate = n / self.seconds if self.seconds else 0.0
        lines = [f"{n} cases in {self.seconds:.1f} s ({rate:.1f} cases/s), "
                 f"{len(self.findings)} findings"]
        by_device = collections.Counter(o.device or "load+validate" for o in self.outcomes)
        lines.append("cases by device: " + ", ".join(f"{d} {c}" for d, c in
                                                     sorted(by_device.items())))
        lines.append("outcomes: " + ", ".join(f"{r} {c}" for r, c in
                                              self.counts().most_common()))
        grew = sorted(self.outcomes, key=lambda o: -o.grew_mb)[:3]
        if grew and grew[0].grew_mb:
            lines.append("largest rises of peak memory: " + "; ".join(
                f"{o.grew_mb} MiB ({o.source} / {o.mutation} / {o.device or 'load'})"
                for o in grew if o.grew_mb))
        kinds = collections.Counter(o.result for o in self.findings)
        for kind, count in kinds.most_common():
            lines.append(f"  finding {kind}: {count}")
            for o in [o for o in self.findings if o.result == kind][:3]:
                lines.append(f"    {o.line()}")
        return "\n".join(lines)


# -- the seed models ----------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def zoo_models() -> dict[str, onnx.ModelProto]:
    from hal import models

    return {f"zoo:{n}": models.get(n).to_proto() for n in models.list()}


@functools.lru_cache(maxsize=None)
def light_models() -> dict[str, onnx.ModelProto]:
    """ONNX's light real-world models (opset 9, small weights) that the onnx package ships."""
    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return {f"light:{p.stem[len('light_'):]}": onnx.load(p) for p in sorted(folder.glob("*.onnx"))}


@functools.lru_cache(maxsize=None)
def node_models() -> dict[str, onnx.ModelProto]:
    """ONNX's operator test cases (one small model each), as collected by the onnx package."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {f"node:{c.name}": c.model for c in cases}


def usable_devices(wanted: Sequence[str] = ("cpu@reference",) + FAST_CPU) -> list[str]:
    usable = {d.string for d in hal.devices() if d.usable}
    out = []
    for w in wanted:
        kind, backend = w.split("@")
        if f"{kind}:0@{backend}" in usable:
            out.append(w)
    return out


# -- one case ---------------------------------------------------------------------------

def _bounded(seconds: float) -> Callable:
    """Run a function under a wall-clock bound (SIGALRM; only in the main thread)."""
    def run(fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is not threading.main_thread() or seconds <= 0:
            return fn()

        def expire(signum, frame):
            raise CaseTimeout(f"ran past {seconds} s")

        old = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return run


def _concrete(shape: Sequence[Any], batch: int) -> tuple[int, ...]:
    return tuple(batch if not isinstance(d, int) else d for d in shape)


def call_inputs(specs: Sequence[Any], how: str, rng: random.Random) -> list[Any]:
    """Inputs for a compiled model's call, made wrong or odd in the way ``how`` names."""
    batch = 0 if how == "batch0" else 2
    arrays: list[Any] = []
    for spec in specs:
        shape = _concrete(spec.shape, batch)
        if int(np.prod(shape, dtype=np.float64)) > 1 << 16:
            raise _SkipCall(f"input {spec.name} {shape} is too large to feed in a fuzz case")
        kind = np.dtype(spec.dtype).kind
        if kind == "f":
            a = np.asarray(rng.random() * np.ones(shape) - 0.5, dtype=spec.dtype)
        elif kind == "b":
            a = np.ones(shape, dtype=spec.dtype)
        else:
            a = np.zeros(shape, dtype=spec.dtype)
        arrays.append(a)
    if not arrays:
        return arrays
    i = rng.randrange(len(arrays))
    a = arrays[i]
    if how == "nan" and a.dtype.kind == "f":
        a.reshape(-1)[: max(1, a.size // 2)] = np.nan
    elif how == "readonly":
        a.flags.writeable = False
    elif how == "noncontiguous" and a.ndim:
        wide = np.repeat(a, 2, axis=-1)
        arrays[i] = wide[..., ::2]
    elif how == "dtype":
        arrays[i] = a.astype(rng.choice([np.float64, np.int32, np.float16, np.bool_, np.uint8]))
    elif how == "rank":
        arrays[i] = a[None] if rng.random() < 0.5 or not a.ndim else a.reshape(-1)
    elif how == "shape" and a.ndim:
        arrays[i] = np.zeros(a.shape[:-1] + (a.shape[-1] + rng.choice([1, 3]),), a.dtype)
    elif how == "list":
        arrays[i] = a.tolist()
    elif how == "missing":
        arrays.pop(i)
    elif how == "extra":
        arrays.append(a.copy())
    elif how == "scalar":
        arrays[i] = rng.choice([1.0, "text", None, np.float32(1)])
    return arrays


class _SkipCall(Exception):
    pass


def _snapshot(values: Sequence[Any]) -> list[Any]:
    return [(v.copy(), v.flags.writeable) if isinstance(v, np.ndarray) else None for v in values]


def _unchanged(values: Sequence[Any], before: list[Any]) -> bool:
    for v, snap in zip(values, before):
        if snap is None:
            continue
        copy, writeable = snap
        if v.flags.writeable != writeable or v.shape != copy.shape or v.dtype != copy.dtype:
            return False
        if not np.array_equal(v, copy, equal_nan=v.dtype.kind in "fc"):
            return False
    return True


def run_case(source: str, proto: onnx.ModelProto, mutation: str, seed: int,
             device: str | None, call: str | None, timeout: float = 30.0) -> Outcome:
    """Mutate ``proto``, then load and validate it, compile it on ``device`` and call it."""
    rng = random.Random(seed)
    out = Outcome(source, mutation, device, call, "ok")
    mutated = MUTATIONS[mutation](proto, rng)
    before = mutated.SerializeToString() if isinstance(mutated, onnx.ModelProto) else None

    def work() -> str:
        from hal.ir.validate import validate

        if mutation == "identity" and (source, device) in _COMPILED:
            compiled = _COMPILED[(source, device)]  # a valid model: fuzz only its call
        else:
            model = hal.load(mutated)
            if before is not None and mutated.SerializeToString() != before:
                raise _Finding("the ModelProto passed to hal.load was modified")
            if device is None:
                validate(model)
                return "ok"
            compiled = hal.compile(model, device)
            if mutation == "identity":
                _COMPILED[(source, device)] = compiled
        if call is None:
            return "ok"
        try:
            inputs = call_inputs(compiled.inputs, call, rng)
        except _SkipCall:
            return "ok"
        snap = _snapshot(inputs)
        try:
            compiled(*inputs)
        finally:
            if not _unchanged(inputs, snap):
                raise _Finding(f"call {call!r} changed the caller's input arrays")
        return "ok"

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out.result = _bounded(timeout)(work)
    except HalError as exc:
        out.result, out.message = type(exc).__name__, str(exc)
        if not out.message.strip():
            out.result, out.finding = f"{type(exc).__name__} without a message", True
    except _Finding as exc:
        out.result, out.message, out.finding = "input modified", str(exc), True
    except CaseTimeout as exc:
        out.result, out.message, out.finding = "hang", str(exc), True
    except Exception as exc:  # noqa: BLE001 - any other exception type is what fuzzing finds
        out.result, out.message, out.finding = type(exc).__name__, str(exc), True
    out.grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) // 1024
    return out


class _Finding(Exception):
    pass


#: compiled unmutated seed models by (source, device): "identity" cases fuzz their calls
_COMPILED: dict[tuple[str, str], Any] = {}


# -- many cases ---------------------------------------------------------------------------

#: (device or None for load+validate only, weight): a cheap mix where most cases never compile
QUICK_PLAN = ((None, 70), ("cpu@reference", 12), ("cpu@ort", 12), ("cpu@torch", 2),
              ("cpu@jax", 2), ("cpu@tf", 2))


def fuzz(cases: int, plan: Sequence[tuple[str | None, int]] = QUICK_PLAN, seed: int = 0,
         node_cases: bool = True, light: bool = True, timeout: float = 30.0,
         progress: Callable[[int, Outcome], None] | None = None,
         starting: Callable[[dict], None] | None = None) -> Report:
    """Run ``cases`` Hypothesis-drawn cases over the plan's devices (unusable ones dropped)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    usable = set(usable_devices())
    lanes = [d for d, w in plan if d is None or d in usable for _ in range(w)]
    # (family, weight): the zoo most, ONNX's small operator models next, its light real-world
    # models (100+ ms each to load) least; only the first two are compiled
    families = {"zoo": (zoo_models(), 5)}
    if node_cases:
        families["node"] = (node_models(), 4)
    if light:
        families["light"] = (light_models(), 1)
    sources = {name: proto for models, _ in families.values() for name, proto in models.items()}
    weighted = [f for f, (_, w) in families.items() for _ in range(w)]
    names = {f: sorted(models) for f, (models, _) in families.items()}
    report = Report()
    t0 = time.perf_counter()

    @hypothesis_seed(seed)
    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(lane=st.sampled_from(lanes), family=st.sampled_from(weighted),
           pick=st.integers(0, 1 << 30),
           mutation=st.sampled_from(sorted(MUTATIONS)), case_seed=st.integers(0, (1 << 32) - 1),
           call=st.sampled_from(CALLS))
    def one(lane, family, pick, mutation, case_seed, call):
        if lane is not None and family == "light":
            family = "zoo"
        source = names[family][pick % len(names[family])]
        if starting is not None:
            starting({"source": source, "mutation": mutation, "seed": case_seed, "device": lane,
                      "call": call if lane is not None else None})
        outcome = run_case(source, sources[source], mutation, case_seed, lane,
                           call if lane is not None else None, timeout)
        report.outcomes.append(outcome)
        if progress is not None:
            progress(len(report.outcomes), outcome)

    quiet = [logging.getLogger(n) for n in ("hal", "onnx_ir")]  # what every bad model logs
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.CRITICAL)
    try:
        one()
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    report.seconds = time.perf_counter() - t0
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hal.testing.fuzz", description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    ap.add_argument("--no-node-cases", action="store_true",
                    help="leave out ONNX's operator test models (collecting them takes ~10 s)")
    ap.add_argument("--jsonl", action="store_true",
                    help="one line per case as it starts and ends (for bench/fuzz.py's workers)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.jsonl:
        fuzz(args.cases, seed=args.seed, node_cases=not args.no_node_cases,
                      timeout=args.timeout,
                      starting=lambda case: print("start\t" + json.dumps(case), flush=True),
                      progress=lambda n, o: print("outcome\t" + o.to_json(), flush=True))
        return 0

    def progress(n: int, outcome: Outcome) -> None:
        if outcome.finding:
            print(f"finding: {outcome.line()}", flush=True)
        if n % 1000 == 0:
            rate = n / (time.perf_counter() - t0)
            print(f"{n} cases, {rate:.1f}/s", flush=True)

    report = fuzz(args.cases, seed=args.seed, node_cases=not args.no_node_cases,
                  timeout=args.timeout, progress=progress)
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
