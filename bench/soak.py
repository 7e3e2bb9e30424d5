"""The long run (``make soak``): ``--cycles`` compile -> call -> release cycles of lenet on
every usable CPU backend, each in a process of its own (one backend's memory never shows in
another's) with a temporary folder of its own. Per backend: resident memory at the end of
warm-up and at the end, its growth, and the descriptors, temporary files and processes left
behind (``hal.testing.soak``). Exits 1 when memory grew more than ``--max-growth`` percent or
anything was left behind.

    python bench/soak.py [--cycles 1000] [--warmup 100] [--devices cpu@ort,cpu@tf]
        [--new-weights] [--json out]

A device may carry compile options after ``+``: ``--devices cpu@tf+xla=false``. Workers run
with glibc's mmap threshold fixed (``hal.testing.soak.STEADY_MALLOC``) unless
``--glibc-dynamic``. ``--new-weights``: each cycle compiles the model with other weights, so
what a runtime keeps of every distinct model shows (``hal.testing.soak``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import hal
from hal.testing.soak import MAX_GROWTH_PCT, STEADY_MALLOC, SoakResult


def cpu_devices() -> list[str]:
    """The usable devices that run on this machine's CPU, each once (``cpu:0@opencl`` is
    another name for ``opencl:0@opencl``)."""
    out = []
    for d in hal.devices():
        if d.usable and d.kind == "cpu":
            name = d.alias_of or d.string
            if name not in out:
                out.append(name)
    return out


def run_one(device: str, cycles: int, warmup: int, model: str,
            env: dict[str, str], new_weights: bool = False) -> SoakResult | str:
    """The soak of ``device`` (``DEVICE[+KEY=VALUE...]``) in a fresh process, or why it ended
    without a result."""
    device, *options = device.split("+")
    tmp = tempfile.mkdtemp(prefix="hal-soak-")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hal.testing.soak", device, "--cycles", str(cycles),
             "--warmup", str(warmup), "--model", model, "--json",
             *[f"--option={o}" for o in options], *(["--new-weights"] if new_weights else [])],
            capture_output=True, text=True, env={**os.environ, **env, "TMPDIR": tmp})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode not in (0, 1) or not lines:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        return f"the worker ended ({how}) without a result: {proc.stderr.strip()[-500:]}"
    return SoakResult.from_dict(json.loads(lines[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--devices", help="comma-separated; default every usable CPU backend")
    ap.add_argument("--max-growth", type=float, default=MAX_GROWTH_PCT,
                    help="percent of resident memory growth after warm-up that passes")
    ap.add_argument("--glibc-dynamic", action="store_true",
                    help="leave glibc's mmap threshold dynamic (its default) in the workers")
    ap.add_argument("--new-weights", action="store_true",
                    help="compile the model with other weights each cycle (seed = cycle)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    env = {} if args.glibc_dynamic else {k: os.environ.get(k, v) for k, v in STEADY_MALLOC.items()}
    devices = args.devices.split(",") if args.devices else cpu_devices()
    what = f"{args.model}, new weights each cycle" if args.new_weights else args.model
    print(f"soak: {args.cycles} cycles of {what} (compile, call, release) per backend, "
          f"memory compared from cycle {args.warmup}", flush=True)
    results, failed = [], 0
    for device in devices:
        r = run_one(device, args.cycles, args.warmup, args.model, env, args.new_weights)
        if isinstance(r, str):
            failed += 1
            print(f"{device:22} FAILED: {r}", flush=True)
            results.append({"device": device, "error": r})
            continue
        ok = r.ok(args.max_growth)
        failed += not ok
        print(r.line() + ("" if ok else "  <- FAIL"), flush=True)
        for what in (r.leaked_fds, r.leaked_tmp, r.leaked_children):
            for item in what[:5]:
                print(f"{'':22} left behind: {item}")
        results.append(r.to_dict())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cycles": args.cycles, "warmup": args.warmup, "model": args.model,
                       "new_weights": args.new_weights, "environment": env,
                       "max_growth_pct": args.max_growth, "results": results}, f, indent=2)
    print(f"soak: {len(devices) - failed} of {len(devices)} backends within "
          f"{args.max_growth:g}% growth and nothing left behind")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
