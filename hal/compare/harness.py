"""The measurement harness: warm-up, timed calls until a budget, percentiles."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

import hal
from hal.errors import HalError


@dataclass
class Row:
    model: str
    device: str
    backend: str = ""
    simulated: bool = False
    batch: int = 1
    precision: str = "fp32"
    compile_s: float | None = None
    first_call_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    throughput_per_s: float | None = None
    runs: int = 0
    max_abs_err: float | None = None
    top1_agreement: float | None = None
    placement: dict = field(default_factory=dict)
    transfers: dict = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Timing:
    first_call_ms: float
    times_ms: list[float]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.times_ms, q))


def measure(compiled: hal.CompiledModel, inputs: Sequence[np.ndarray], budget_s: float = 1.0,
            warmup: int = 3, max_runs: int = 1000, min_runs: int = 5) -> tuple[Timing, list]:
    """Time ``compiled`` on ``inputs``: first call, warm-up, then calls until the budget."""
    t0 = time.perf_counter()
    outputs = compiled(*inputs)
    compiled.sync()
    first = (time.perf_counter() - t0) * 1e3
    for _ in range(warmup):
        compiled(*inputs)
    compiled.sync()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() < deadline):
        t = time.perf_counter()
        compiled(*inputs)
        compiled.sync()
        times.append((time.perf_counter() - t) * 1e3)
    return Timing(first, times), outputs


class Results:
    def __init__(self, rows: list[Row], environment: dict):
        self.rows = rows
        self.environment = environment

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps({"environment": self.environment,
                           "rows": [r.to_dict() for r in self.rows]}, indent=2)
        if path:
            with open(path, "w") as f:
                f.write(text)
        return text

    def table(self):
        from rich.table import Table

        t = Table(title="HAL device comparison (latency per call; error vs cpu@reference)")
        for col in ("model", "device", "batch", "p50 ms", "p90 ms", "items/s", "max err",
                    "top-1", "placement"):
            t.add_column(col, justify="right" if col not in ("model", "device", "placement")
                         else "left")
        best: dict[tuple[str, int], float] = {}
        for r in self.rows:
            if r.p50_ms is not None and not r.error:
                key = (r.model, r.batch)
                best[key] = min(best.get(key, float("inf")), r.p50_ms)
        for r in self.rows:
            dev = r.device + (" (simulated)" if r.simulated else "")
            if r.error:
                t.add_row(r.model, dev, str(r.batch), "[red]error[/red]", "", "", "", "",
                          r.error[:60])
                continue
            star = r.p50_ms == best.get((r.model, r.batch))
            p50 = f"{r.p50_ms:.3f}"
            t.add_row(r.model, dev, str(r.batch), f"[bold green]{p50}[/]" if star else p50,
                      f"{r.p90_ms:.3f}", f"{r.throughput_per_s:,.0f}", f"{r.max_abs_err:.1e}",
                      f"{r.top1_agreement:.0%}" if r.top1_agreement is not None else "-",
                      ", ".join(f"{d}×{n}" for d, n in r.placement.items()))
        return t


def environment() -> dict:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"hal": hal.__version__, "python": platform.python_version(),
            "numpy": np.__version__, "cpu": cpu, "cores": os.cpu_count(),
            "platform": platform.platform()}


def _top1(y: np.ndarray, ref: np.ndarray) -> float | None:
    if y.ndim < 2 or y.shape != ref.shape:
        return None
    return float(np.mean(y.reshape(-1, y.shape[-1]).argmax(-1) ==
                         ref.reshape(-1, ref.shape[-1]).argmax(-1)))


def compare(models: Sequence[str] | None = None, devices: Sequence[str] | None = None,
            batch: Sequence[int] = (1, 64), precision: Sequence[str] = ("fp32",),
            budget_s: float = 0.5, progress: Any = None) -> Results:
    """Every model on every device at every batch size; one failure never aborts the run."""
    models = list(models or hal.models.list())
    if devices is None:
        devices = [d.string for d in hal.devices() if d.usable]
    batch = [batch] if isinstance(batch, int) else list(batch)
    precision = [precision] if isinstance(precision, str) else list(precision)
    rows: list[Row] = []
    for name in models:
        model = _model(name)
        ref = hal.compile(model, "cpu@reference")
        for b in batch:
            x = _example(model, name, b)
            y_ref = ref(*x)[0]
            for dev in devices:
                for prec in precision:
                    rows.append(_row(model, name, dev, b, prec, x, y_ref, budget_s))
                    if progress:
                        progress()
    return Results(rows, environment())


def _model(name: str) -> hal.Model:
    from hal.frontends import to_model

    return to_model(name)


def _example(model: hal.Model, name: str, batch: int) -> list[np.ndarray]:
    if name in hal.models.list():
        return [hal.models.example_input(name, batch)]
    from hal.cli import example_inputs

    return example_inputs(model, batch)


def _row(model, name, dev, b, prec, x, y_ref, budget_s) -> Row:
    row = Row(model=name, device=dev, batch=b, precision=prec)
    try:
        t0 = time.perf_counter()
        compiled = hal.compile(model, dev, precision=prec)
        row.compile_s = time.perf_counter() - t0
        row.device = compiled.device.string
        row.backend = compiled.device.backend.name
        row.simulated = compiled.device.simulated
        timing, outs = measure(compiled, x, budget_s)
        row.first_call_ms = timing.first_call_ms
        row.p50_ms, row.p90_ms, row.p99_ms = timing.pct(50), timing.pct(90), timing.pct(99)
        row.runs = len(timing.times_ms)
        row.throughput_per_s = b / (row.p50_ms / 1e3)
        y = np.asarray(outs[0], dtype=np.float64)
        row.max_abs_err = float(np.max(np.abs(y - y_ref))) if y.shape == y_ref.shape else None
        row.top1_agreement = _top1(y, y_ref)
        placement: dict[str, int] = {}
        for d in compiled.placement.values():
            placement[d] = placement.get(d, 0) + 1
        row.placement = placement
        row.transfers = compiled.last_transfers.to_dict()
    except HalError as exc:
        row.error = str(exc)
    except Exception as exc:  # a broken backend must not abort the comparison
        row.error = f"{type(exc).__name__}: {exc}"
    return row
