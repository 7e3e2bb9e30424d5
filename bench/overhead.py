"""HAL's own cost per call: a compiled model against its runtime's raw call, same object.

    python bench/overhead.py [--backends ort,openvino,iree] [--model lenet] [--batches 1 64]
                             [--runs 3000] [--breakdown]

For each CPU backend here, HAL compiles the model and the raw call is made on the very
runtime object HAL's executable holds (onnxruntime's InferenceSession.run, OpenVINO's
InferRequest.infer, IREE's module function), with the same input array, returning numpy
outputs as HAL does. Each round times one call of every variant in turn, the first one
rotating (interleaved, so drift and the runtimes' spinning threads hit all alike).
Reported: medians in µs and HAL's added µs per call, for ``CompiledModel(x)`` (numpy in and
out: input checks, buffer wrapping, output conversion), ``CompiledModel.run([buf])`` (device
buffers) and ``Executable.run([buf])`` (the backend alone). The goal is at most 10 µs added
at batch 1 (``GOAL_US``). ``--breakdown`` times HAL's Python alone, the runtime stubbed out.
A backend that is missing here is listed with why.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_US = 10.0


def _interleaved(variants: dict, runs: int) -> dict[str, float]:
    for fn in variants.values():
        for _ in range(50):
            fn()
    times: dict[str, list[int]] = {k: [] for k in variants}
    clock = time.perf_counter_ns
    order = list(variants.items())
    for r in range(runs):
        for k, fn in order[r % len(order):] + order[:r % len(order)]:
            t0 = clock()
            fn()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) / 1e3 for k, v in times.items()}


# -- the raw call of each runtime, on the object HAL's executable holds ----------------------
def _raw_ort(exe, x):
    sess, names = exe.session, list(exe.output_names)
    feeds = {exe.input_names[0]: x}
    return lambda: sess.run(names, feeds)


def _raw_openvino(exe, x):
    # OpenVINO's fastest Python call: the input set as a tensor sharing x's memory, infer()
    # without arguments (no data dispatcher, no result dict), the output copied out
    from hal.backends.common.frameworks import import_openvino

    tensor = import_openvino().Tensor
    req = exe.compiled.create_infer_request()

    def call():
        req.set_input_tensor(0, tensor(x, shared_memory=True))
        req.infer()
        return [req.get_output_tensor(0).data.copy()]
    return call


def _raw_iree(exe, x):
    exe.run([exe.device.put(x)])  # the module for this shape is built and loaded
    invoke = exe._loaded[(x.shape,) if exe.static else None].invoker()
    return lambda: [np.array(o.to_host()) for o in _as_list(invoke(x))]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


RAW = {"ort": _raw_ort, "openvino": _raw_openvino, "iree": _raw_iree}


def measure(backend: str, name: str, batch: int, runs: int) -> dict:
    import hal

    compiled = hal.compile(name, f"cpu@{backend}")
    if len(compiled.executables) != 1:
        return {"backend": backend, "skipped": f"{name} runs in {len(compiled.executables)} "
                                               f"segments on cpu@{backend}"}
    exe = compiled.executables[0]
    x = hal.models.example_input(name, batch)
    try:
        raw = RAW[backend](exe, x)
    except AttributeError as exc:
        return {"backend": backend, "skipped": f"its executable does not hold the runtime "
                                               f"object this bench expects ({exc})"}
    buf = compiled.device.put(x)
    np.testing.assert_allclose(compiled(x)[0], np.asarray(_as_list(raw())[0]), rtol=1e-5,
                               atol=1e-5)
    med = _interleaved({"raw": raw, "CompiledModel(x)": lambda: compiled(x),
                        "CompiledModel.run([buf])": lambda: compiled.run([buf]),
                        "Executable.run([buf])": lambda: exe.run([buf])}, runs)
    base = med["raw"]
    added = {k: round(v - base, 2) for k, v in med.items() if k != "raw"}
    return {"backend": backend, "model": name, "batch": batch, "runs": runs,
            "raw_us": round(base, 2), "median_us": {k: round(v, 2) for k, v in med.items()},
            "added_us": added, "goal_us": GOAL_US,
            "meets_goal": batch != 1 or added["CompiledModel(x)"] <= GOAL_US}


def breakdown(name: str, runs: int) -> dict:
    """HAL's Python per call on cpu@ort with onnxruntime's C++ run replaced by a stub that
    returns the outputs of one real call: what is left is HAL alone (best of 9 repeats)."""
    import timeit

    import hal

    compiled = hal.compile(name, "cpu@ort")
    exe = compiled.executables[0]
    x = hal.models.example_input(name, 1)
    outs = exe.session.run(exe.output_names, {exe.input_names[0]: x})
    exe._run = lambda names, feeds, options: outs
    dev = compiled.device
    buf = dev.put(x)
    steps = {"Executable.run([buf])": lambda: exe.run([buf]),
             "Device.put(x)": lambda: dev.put(x),
             "CompiledModel._check((x,))": lambda: compiled._check((x,)),
             "CompiledModel.run([buf])": lambda: compiled.run([buf]),
             "CompiledModel(x)": lambda: compiled(x)}
    n = max(runs * 10, 1000)
    return {"what": "HAL Python per call, onnxruntime stubbed out", "model": name,
            "best_us": {k: round(min(timeit.repeat(f, number=n, repeat=9)) / n * 1e6, 3)
                        for k, f in steps.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="ort,openvino,iree")
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--breakdown", action="store_true")
    args = ap.parse_args(argv)
    import hal

    usable = {d.backend for d in hal.devices() if d.usable and d.kind == "cpu"}
    for b in args.backends.split(","):
        if b not in usable:
            print(json.dumps({"backend": b, "skipped": f"cpu@{b} is not usable here "
                                                       f"(hal devices says why)"}))
            continue
        for batch in args.batches:
            runs = args.runs if batch == 1 else max(args.runs // 10, 100)
            print(json.dumps(measure(b, args.model, batch, runs), ensure_ascii=False))
    if args.breakdown:
        print(json.dumps(breakdown(args.model, args.runs), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
