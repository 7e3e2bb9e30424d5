"""HAL ``cpu@jax`` against the hand-written jax.jit LeNet: per-call time and HAL's overhead.

    python bench/jax_overhead.py [--runs 2000] [--model lenet|relu] [--batches 1 64]

``--model relu`` times a one-node graph, so the difference is dispatch alone.

Each round times one call of every variant in turn (interleaved, so drift hits all of
them alike); every call ends in block_until_ready. Reported: medians in µs, the ratio
HAL / hand-written, and HAL's added time per call. Inputs are already on the device.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import numpy as np


def _handwritten():
    path = Path(__file__).resolve().parent / "handwritten" / "jax_models.py"
    spec = importlib.util.spec_from_file_location("hal_bench_jax_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _relu_graph():
    """One Relu node: what is left of a call is dispatch, HAL's and jax's."""
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, 28, 28]) for n in "xy"]
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [vi[0]], [vi[1]])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def measure(name: str, batch: int, runs: int) -> dict:
    import jax
    import jax.numpy as jnp

    import hal

    dev = hal.device("cpu@jax")
    if name == "relu":
        compiled = hal.compile(_relu_graph(), dev)
        relu = jax.jit(lambda x: jnp.maximum(x, 0))
        peer = relu
        x = hal.models.example_input("lenet", batch)
    else:
        compiled = hal.compile(hal.models.get(name), dev)
        peer = _handwritten().build(name, hal.models.build(name))
        x = hal.models.example_input(name, batch)
    exe = compiled.executables[0]
    buf = dev.put(x)
    xj = buf.array

    variants = {
        "jax.jit (hand-written)": lambda: peer(xj).block_until_ready(),
        "HAL Executable.run": lambda: (exe.run([buf]), dev.sync()),
        "HAL CompiledModel.run": lambda: (compiled.run([buf]), compiled.sync()),
        "jax.jit, numpy in and out": lambda: np.asarray(peer(x)),
        "HAL CompiledModel(numpy)": lambda: compiled(x),
    }
    for fn in variants.values():  # compile and warm up
        for _ in range(20):
            fn()
    times = {k: [] for k in variants}
    clock = time.perf_counter_ns
    for _ in range(runs):
        for k, fn in variants.items():
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    med = {k: statistics.median(v) / 1e3 for k, v in times.items()}
    base = med["jax.jit (hand-written)"]
    jax.block_until_ready(xj)
    return {"model": name, "batch": batch, "runs": runs, "median_us": med,
            "ratio": {k: v / base for k, v in med.items()},
            "overhead_us": {k: v - base for k, v in med.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--runs", type=int, default=2000)
    args = ap.parse_args()
    for b in args.batches:
        r = measure(args.model, b, args.runs)
        print(f"{r['model']} batch {b} ({r['runs']} interleaved rounds)")
        for k, v in r["median_us"].items():
            print(f"  {k:26s} {v:9.1f} µs   x{r['ratio'][k]:.3f}   "
                  f"{r['overhead_us'][k]:+8.1f} µs")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
