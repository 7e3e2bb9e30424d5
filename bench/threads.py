"""Threads, the long way: one compiled model per usable backend, called from ``--threads``
threads at once, ``--calls`` calls each at batch 1 on inputs of their own, with Python
switching threads every ``--switch`` seconds (default 1 us; its own default is 5 ms) so that
races between calls show. Prints, per device and model, how many calls differ from the same
call made in one thread; exits 1 when any does.

    python bench/threads.py [--threads 8] [--calls 40] [--models lenet,tiny_transformer]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import hal


def devices() -> list[str]:
    """Each usable backend's first device, slow simulations left out."""
    seen, out = set(), []
    for d in sorted(hal.devices(), key=lambda d: (d.backend, d.kind, d.index)):
        if d.usable and not d.alias_of and not d.slow_simulation \
                and (d.backend, d.kind) not in seen:
            seen.add((d.backend, d.kind))
            out.append(d.string)
    return out


def check(device: str, model: str, threads: int, calls: int, switch: float) -> int | None:
    """Calls that differ from one thread's, or None where the device runs no layer of it."""
    dev = hal.device(device)
    fp32 = "fp32" in dev.backend.precisions
    if not fp32 and model != "lenet":
        return None
    compiled = hal.compile(model, dev, precision="fp32" if fp32 else "int8")
    spec = compiled.inputs[0]
    shape = [1 if isinstance(d, str) else d for d in spec.shape]
    rng = np.random.default_rng(0)
    xs = [[rng.standard_normal(shape).astype(spec.dtype) for _ in range(calls)]
          for _ in range(threads)]
    alone = [[compiled(x)[0] for x in row] for row in xs]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(switch)
    try:
        with ThreadPoolExecutor(threads) as pool:
            together = list(pool.map(lambda t: [compiled(x)[0] for x in xs[t]], range(threads)))
    finally:
        sys.setswitchinterval(interval)
    return sum(not np.array_equal(a, b) for row_a, row_b in zip(alone, together)
               for a, b in zip(row_a, row_b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--switch", type=float, default=1e-6, help="seconds between switches")
    ap.add_argument("--models", default="lenet,tiny_transformer")
    ap.add_argument("--devices", help="comma-separated; default every usable backend's first")
    args = ap.parse_args()
    wrong = 0
    for device in args.devices.split(",") if args.devices else devices():
        for model in args.models.split(","):
            t0 = time.perf_counter()
            bad = check(device, model, args.threads, args.calls, args.switch)
            if bad is None:
                continue
            wrong += bad
            print(f"{device:18} {model:18} {bad:4} of {args.threads * args.calls} calls differ "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
