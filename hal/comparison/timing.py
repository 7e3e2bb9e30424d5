"""Timing one callable: first call, warm-up, timed calls until a budget; memory high-water mark."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Timing:
    first_call_ms: float
    times_ms: list[float]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.times_ms, q))

    def stats(self) -> dict:
        t = np.asarray(self.times_ms)
        p25, p50, p75 = np.percentile(t, [25, 50, 75])
        return {"p50_ms": float(p50), "p90_ms": self.pct(90), "p99_ms": self.pct(99),
                "mean_ms": float(t.mean()), "min_ms": float(t.min()),
                "iqr_ms": float(p75 - p25), "mad_ms": float(np.median(np.abs(t - p50))),
                "runs": int(t.size)}


def measure(compiled: Any, inputs: Sequence[np.ndarray], budget_s: float = 1.0,
            warmup: int = 3, max_runs: int = 1000, min_runs: int = 5,
            sync: Callable[[], None] | None = None) -> tuple[Timing, list]:
    """Time ``compiled(*inputs)``: the first call, warm-up, then calls until ``budget_s``.

    Each timed call is closed by the device's own synchronization (``compiled.sync()``,
    which reaches ``Backend.sync``), so asynchronous devices are timed to completion.
    Warm-up stops after ``warmup`` calls or half the budget, whichever comes first (at
    least one call), so slow rows do not spend their budget warming up. Timed calls stop at
    ``max_runs`` or when the budget is spent and at least ``min_runs`` were made.
    """
    sync = sync or getattr(compiled, "sync", None) or (lambda: None)
    clock = time.perf_counter
    t0 = clock()
    outputs = compiled(*inputs)
    sync()
    first = (clock() - t0) * 1e3
    end_warm = clock() + budget_s / 2
    for _ in range(warmup):
        compiled(*inputs)
        sync()
        if clock() > end_warm:
            break
    return Timing(first, timed_calls(lambda: compiled(*inputs), budget_s, max_runs, min_runs,
                                     sync)), outputs


def timed_calls(call: Callable[[], Any], budget_s: float, max_runs: int = 1000,
                min_runs: int = 5, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Milliseconds of each ``call()`` (closed by ``sync()``), repeated until ``budget_s`` is
    spent and at least ``min_runs`` were made, or ``max_runs``."""
    clock = time.perf_counter
    times: list[float] = []
    deadline = clock() + budget_s
    while len(times) < max_runs and (len(times) < min_runs or clock() < deadline):
        t = clock()
        call()
        sync()
        times.append((clock() - t) * 1e3)
    return times


class PeakMemory:
    """Host memory high-water mark of this process over a block of work, in MB above its start.

    On Linux the kernel's own peak-RSS counter (VmHWM) is reset at the start through
    /proc/self/clear_refs, so the figure is exact for the block, transient peaks included.
    Elsewhere only the process-lifetime peak (ru_maxrss) exists: the figure is then how far
    the block raised it, which is 0 when an earlier row went higher. Device memory (a GPU's)
    is not host RSS and is not counted.
    """

    def __init__(self) -> None:
        self.method = "vmhwm-reset" if _can_reset_hwm() else "ru_maxrss-growth"
        self.start_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.method == "vmhwm-reset":
            _reset_hwm()
            self.start_mb = _status_mb("VmRSS")
        else:
            self.start_mb = _maxrss_mb()
        self.peak_mb: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        high = _status_mb("VmHWM") if self.method == "vmhwm-reset" else _maxrss_mb()
        self.peak_mb = max(0.0, high - self.start_mb)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _can_reset_hwm() -> bool:
    if not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK):
        return False
    try:
        _reset_hwm()
        return _status_mb("VmHWM") > 0
    except OSError:
        return False


def _maxrss_mb() -> float:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
