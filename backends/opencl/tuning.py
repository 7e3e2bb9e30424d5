"""Per-device GEMM tuning: a short timed search on first use, cached on disk, overridable.

The search times a few register-tile / K-block / work-group shapes on one GEMM,
stopping when its time budget is spent, and stores the winner in
``$HAL_CACHE_DIR/opencl/tuning/<device hash>.json``. ``hal.compile(...,
gemm_tile=(mr, nr, kc))`` or ``gemm_tile=(mr, nr, kc, wg_n, wg_m)`` skips it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from hal import diskcache
from hal.backends.opencl.runtime import ClDevice, cache_dir
from hal.errors import OptionError

#: Time for trying candidates after the first (a CPU runtime compiles each one: seconds).
BUDGET_S = 6.0
TUNE_SIZE = 384


@dataclass(frozen=True)
class GemmConfig:
    mr: int = 6      # rows of C per work-item
    nr: int = 16     # columns of C per work-item (multiple of 8: float8 vectors)
    kc: int = 256    # K block walked by the whole work-group between barriers (0: no blocking)
    wg_n: int = 8    # work-group: panels of B side by side
    wg_m: int = 8    # work-group: row blocks sharing each panel

    def defines(self) -> dict:
        d = {"MR": self.mr, "NR": self.nr}
        if self.kc:
            d["KC"] = self.kc
        return d

    def to_dict(self) -> dict:
        return asdict(self)


CPU_CANDIDATES = [GemmConfig(6, 16, 256, 8, 8), GemmConfig(6, 16, 128, 8, 8),
                  GemmConfig(6, 16, 256, 4, 16), GemmConfig(4, 16, 256, 8, 8),
                  GemmConfig(8, 8, 256, 8, 8), GemmConfig(6, 16, 0, 1, 16)]
GPU_CANDIDATES = [GemmConfig(4, 8, 0, 16, 16), GemmConfig(2, 8, 0, 16, 16),
                  GemmConfig(4, 16, 0, 8, 16), GemmConfig(1, 8, 0, 32, 8)]


def parse_option(value) -> GemmConfig:
    """``gemm_tile`` as given to hal.compile -> GemmConfig, or OptionError."""
    try:
        vals = [int(v) for v in value]
    except (TypeError, ValueError):
        vals = []
    if len(vals) not in (3, 5):
        raise OptionError(f"gemm_tile must be (mr, nr, kc) or (mr, nr, kc, wg_n, wg_m) integers, "
                          f"got {value!r}")
    mr, nr, kc = vals[:3]
    wg = vals[3:] or [8, 8]
    if not 1 <= mr <= 16 or nr not in (8, 16, 24, 32) or kc < 0 or min(wg) < 1 \
            or wg[0] * wg[1] > 1024:
        raise OptionError(f"gemm_tile {tuple(vals)} is out of range: mr 1..16, nr one of "
                          f"8/16/24/32, kc >= 0 (0: no K blocking), wg_n*wg_m <= 1024")
    return GemmConfig(mr, nr, kc, wg[0], wg[1])


def _path(dev: ClDevice):
    from hal.backends.opencl.programs import kernel_source

    # a changed kernel invalidates its tuning
    h = hashlib.sha256((dev.identity + kernel_source("gemm.cl")).encode()).hexdigest()[:24]
    return cache_dir() / "tuning" / f"{h}.json"


def tuned(dev: ClDevice, build_options: str = "", enabled: bool = True) -> tuple[GemmConfig, dict]:
    """The device's GEMM config and how it was obtained (for Executable.info)."""
    key = ("gemm", build_options)
    if key in dev.tuning:
        cfg, info = dev.tuning[key]
        return cfg, {**info, "source": "memory"}
    default = GemmConfig() if dev.type_kind == "cpu" else GPU_CANDIDATES[0]
    if not enabled:
        return default, {"source": "default (autotune off)"}
    try:
        path = _path(dev)
        path.parent.mkdir(mode=0o700, exist_ok=True)
    except OSError:  # no cache: search every time
        path = None
    if path is None:
        cfg, info = _search(dev, build_options, default)
    else:
        with diskcache.locked(path):  # a second process tuning the same device waits for it
            cfg, info = _saved(path, build_options) or _search_and_store(dev, build_options,
                                                                         default, path)
    dev.tuning[key] = (cfg, info)
    return cfg, info


def _saved(path, build_options: str) -> tuple[GemmConfig, dict] | None:
    try:
        saved = json.loads(diskcache.read_bytes(path) or b"{}")
        if saved and saved.get("build_options", "") == build_options:
            return GemmConfig(**saved["config"]), {"source": "disk cache",
                                                   "gflops": saved.get("gflops")}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _search_and_store(dev: ClDevice, build_options: str, default: GemmConfig,
                      path) -> tuple[GemmConfig, dict]:
    cfg, info = _search(dev, build_options, default)
    try:
        diskcache.write_bytes(path, json.dumps({"device": dev.identity, "config": cfg.to_dict(),
                                                "build_options": build_options, **info},
                                               indent=1).encode())
    except OSError:
        pass
    return cfg, info


def _search(dev: ClDevice, build_options: str, default: GemmConfig) -> tuple[GemmConfig, dict]:
    from hal.backends.opencl.ops import gemm_benchmark_plan

    candidates = CPU_CANDIDATES if dev.type_kind == "cpu" else GPU_CANDIDATES
    rng = np.random.default_rng(0)
    n = TUNE_SIZE
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    t_start = time.perf_counter()
    results = {}
    for i, cfg in enumerate(candidates):
        if i and time.perf_counter() - t_start > BUDGET_S:
            break
        try:
            run = gemm_benchmark_plan(dev, cfg, a, b, build_options)
            run()  # first run pays the runtime's per-shape kernel compile
            t0 = time.perf_counter()
            reps = 0
            while reps < 3 or (time.perf_counter() - t0 < 0.05 and reps < 20):
                run()
                reps += 1
            dt = (time.perf_counter() - t0) / reps
            results[cfg] = 2 * n ** 3 / dt / 1e9
        except Exception:  # a shape this device cannot run is simply not a candidate
            continue
    if not results:
        return default, {"source": "default (no candidate ran)"}
    best = max(results, key=results.get)
    return best, {"source": "autotuned", "gflops": round(results[best], 1),
                  "tried": len(results), "tune_s": round(time.perf_counter() - t_start, 2)}
