"""HAL ``cpu@ort`` against a plain ``onnxruntime.InferenceSession`` on the same .onnx.

    python bench/ort_overhead.py [--runs 3000] [--model lenet] [--batches 1 64] [--threads N]
                                 [--breakdown]

Both sessions get the same .onnx bytes (the zoo model saved by HAL, before HAL's flow) and
the same graph optimization level (ORT_ENABLE_ALL: HAL's opt_level=3) and thread count.
Each round times one call of every variant in turn (interleaved, so drift hits all alike);
reported: medians in µs, HAL / plain, and HAL's added µs per call. ``--breakdown`` also times
HAL's own Python per call, with ONNX Runtime stubbed out (LeNet, batch 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _interleaved(variants: dict, runs: int) -> dict[str, float]:
    for fn in variants.values():
        for _ in range(50):
            fn()
    times: dict[str, list[int]] = {k: [] for k in variants}
    clock = time.perf_counter_ns
    order = list(variants.items())
    for r in range(runs):
        # rotate who goes first: the two sessions have their own thread pools, and the
        # one that just ran keeps its threads spinning for a while, slowing the next call
        for k, fn in order[r % len(order):] + order[:r % len(order)]:
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) / 1e3 for k, v in times.items()}


def _plain_session(data: bytes, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def measure(name: str, batch: int, runs: int, threads: int | None) -> dict:
    import hal

    model = hal.models.get(name)
    data = model.to_proto().SerializeToString()
    extra = {} if threads is None else {"intra_op_num_threads": threads}
    compiled = hal.compile(data, "cpu@ort", opt_level=3, **extra)
    exe = compiled.executables[0]
    plain = _plain_session(data, exe.info["intra_op_num_threads"]
                           if isinstance(exe.info["intra_op_num_threads"], int) else 0)
    x = hal.models.example_input(name, batch)
    in_name = plain.get_inputs()[0].name
    out_names = [o.name for o in plain.get_outputs()]
    dev = compiled.device
    buf = dev.put(x)
    np.testing.assert_allclose(compiled(x)[0], plain.run(out_names, {in_name: x})[0],
                               rtol=1e-5, atol=1e-5)
    med = _interleaved({
        "plain InferenceSession.run": lambda: plain.run(out_names, {in_name: x}),
        "HAL CompiledModel(numpy)": lambda: compiled(x),
        "HAL CompiledModel.run(buffers)": lambda: compiled.run([buf]),
        "HAL Executable.run(buffers)": lambda: exe.run([buf]),
    }, runs)
    base = med["plain InferenceSession.run"]
    return {"model": name, "batch": batch, "runs": runs, "threads": exe.info[
        "intra_op_num_threads"], "median_us": {k: round(v, 2) for k, v in med.items()},
        "ratio": {k: round(v / base, 3) for k, v in med.items()},
        "overhead_us": {k: round(v - base, 2) for k, v in med.items()}}


def breakdown(runs: int) -> dict:
    """Where HAL's time goes: LeNet batch 1 with ONNX Runtime's C++ run replaced by a stub
    returning the cached outputs, so what is left is HAL's Python alone (best of 9 timeit
    repeats: stable even on a busy machine)."""
    import timeit

    import hal

    compiled = hal.compile("lenet", "cpu@ort", opt_level=3)
    exe = compiled.executables[0]
    x = hal.models.example_input("lenet", 1)
    outs = exe.session.run(exe.output_names, {exe.input_names[0]: x})
    exe._run = lambda names, feeds, options: outs
    dev = compiled.device
    buf = dev.put(x)
    steps = {
        "Executable.run([buf]) (backend: feeds dict, HostBuffer wrap)": lambda: exe.run([buf]),
        "Device.put(x)": lambda: dev.put(x),
        "CompiledModel._check((x,))": lambda: compiled._check((x,)),
        "CompiledModel._execute((x,)) (incl. Executable.run)": lambda: compiled._execute((x,)),
        "CompiledModel.run([buf])": lambda: compiled.run([buf]),
        "CompiledModel(x)": lambda: compiled(x),
    }
    n = max(runs * 10, 1000)
    return {"what": "HAL Python per call, ORT stubbed out", "model": "lenet", "batch": 1,
            "best_us": {k: round(min(timeit.repeat(f, number=n, repeat=9)) / n * 1e6, 3)
                        for k, f in steps.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="intra_op_num_threads for both sessions (default: HAL's default)")
    args = ap.parse_args()
    for b in args.batches:
        print(json.dumps(measure(args.model, b, args.runs if b == 1 else args.runs // 10,
                                 args.threads),
                         ensure_ascii=False))
    if args.breakdown:
        print(json.dumps(breakdown(args.runs), ensure_ascii=False))


if __name__ == "__main__":
    main()
