"""opencl backend benchmarks: fp32 GEMM against numpy's BLAS, zoo models against cpu@torch.

Ratios come from one run in one process; the machine may be shared, so each number is
the best of a few short repeats. Run: ``python bench/opencl.py [--device opencl:0]``.

Roofline: peak fp32 = cores x clock x lanes x 2 (FMA) x 2 (FMA units per core), with
lanes 16 for avx512f, 8 for avx2+fma, 4 otherwise, cores = logical CPUs in /proc/cpuinfo
and the clock its "cpu MHz" (the current, not the boost, clock: an assumption).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import hal


def cpu_peak_gflops() -> tuple[float, str]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return float("nan"), "no /proc/cpuinfo"
    cores = text.count("processor\t:") or os.cpu_count() or 1
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    ghz = (max(mhz) if mhz else 2000.0) / 1000
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags and " fma" in flags else 4
    peak = cores * ghz * lanes * 2 * 2
    return peak, (f"{cores} cores x {ghz:.2f} GHz x {lanes} fp32 lanes x 2 (FMA) x 2 FMA units "
                  f"= {peak:.0f} GFLOP/s")


def best_time(fn, budget_s: float = 1.0, min_reps: int = 3) -> float:
    fn()
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    return min(times)


def bench_gemm(device: str, peak: float) -> None:
    from hal.backends.opencl.ops import gemm_benchmark_plan
    from hal.backends.opencl.tuning import tuned

    dev = hal.device(device)
    cldev = dev.backend.cl_device(dev.info)
    cfg, how = tuned(cldev)
    print(f"GEMM tile {cfg.to_dict()} ({how.get('source')})")
    print(f"{'size':>6} {'numpy GF/s':>11} {'opencl GF/s':>12} {'ratio':>6} {'numpy %peak':>12} "
          f"{'opencl %peak':>13} {'max err':>9}")
    rng = np.random.default_rng(0)
    for n in (512, 1024, 2048):
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        run = gemm_benchmark_plan(cldev, cfg, a, b)
        budget = 1.0 if n < 2048 else 2.0
        flop = 2 * n ** 3
        t_np = best_time(lambda: a @ b, budget)
        t_cl = best_time(run, budget)
        err = _gemm_error(run, cldev, a, b)
        g_np, g_cl = flop / t_np / 1e9, flop / t_cl / 1e9
        print(f"{n:>6} {g_np:>11.1f} {g_cl:>12.1f} {g_cl / g_np:>6.2f} {100 * g_np / peak:>11.0f}% "
              f"{100 * g_cl / peak:>12.0f}% {err:>9.1e}")


def _gemm_error(run, cldev, a, b) -> float:
    from hal.backends.opencl.runtime import cl

    buf = run()
    c = np.empty((a.shape[0], b.shape[1]), np.float32)
    cl().enqueue_copy(cldev.queue, c, buf, is_blocking=True)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    return float(np.abs(c - ref).max() / np.abs(ref).max())


def bench_zoo(device: str, batch: int) -> None:
    names = hal.models.list()
    torch_ok = any(d.backend == "torch" and d.usable and d.kind == "cpu" for d in hal.devices())
    if not torch_ok:
        print("zoo vs cpu@torch skipped: the torch backend is not registered or not usable here "
              "(it lives on another branch until merged); opencl times only")
    print(f"{'model':>17} {'batch':>5} {'opencl ms':>10} {'torch ms':>9} {'opencl/torch':>13}")
    for name in names:
        x = hal.models.example_input(name, batch)
        ocl = hal.compile(name, device)
        t_ocl = best_time(lambda: ocl(x), 0.7)
        if torch_ok:
            tch = hal.compile(name, "cpu@torch")
            t_t = best_time(lambda: tch(x), 0.7)
            print(f"{name:>17} {batch:>5} {1e3 * t_ocl:>10.2f} {1e3 * t_t:>9.2f} "
                  f"{t_ocl / t_t:>12.2f}x")
        else:
            print(f"{name:>17} {batch:>5} {1e3 * t_ocl:>10.2f} {'-':>9} {'-':>13}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="opencl:0")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--skip-zoo", action="store_true")
    args = ap.parse_args()
    peak, how = cpu_peak_gflops()
    dev = hal.device(args.device)
    print(f"device {dev.string}: {dev.info.name}; peak assumption: {how}")
    if not args.skip_gemm:
        bench_gemm(args.device, peak)
    if not args.skip_zoo:
        bench_zoo(args.device, args.batch)


if __name__ == "__main__":
    main()
