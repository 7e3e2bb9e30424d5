"""HAL ``cpu@tf`` against the same model hand-written in TensorFlow (interleaved medians).

    python bench/tf_vs_handwritten.py [--models lenet,...] [--batches 1,64] [--rounds 300]

Each round times one HAL call and one hand-written call back to back (numpy in, numpy out
for both), so drift in machine load hits both alike. Also reported: HAL's dispatch on top
of the tf.function it compiled (``run`` on device buffers vs calling that function directly
on the same tensors) and the effect of the flows and of the NHWC layout pass.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import time

import hal


def _load_handwritten():
    path = pathlib.Path(__file__).resolve().parent / "handwritten" / "tf_models.py"
    spec = importlib.util.spec_from_file_location("tf_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def interleaved(fns: dict, rounds: int) -> dict:
    times = {k: [] for k in fns}
    for f in fns.values():  # warm-up (XLA compiles per shape on first call)
        for _ in range(3):
            f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lenet")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    tf_models = _load_handwritten()
    for name in args.models.split(","):
        model = hal.models.get(name)
        hand = tf_models.build(name, hal.models.build(name))
        variants = {"hal": hal.compile(model, "cpu@tf"),
                    "hal_nchw": hal.compile(model, "cpu@tf", layout="nchw"),
                    "hal_graph": hal.compile(model, "cpu@tf", xla=False),
                    "hal_graph_nchw": hal.compile(model, "cpu@tf", xla=False, layout="nchw")}
        for batch in map(int, args.batches.split(",")):
            x = hal.models.example_input(name, batch)
            fns = {k: (lambda c=c, x=x: c(x)) for k, c in variants.items()}
            fns["handwritten"] = lambda h=hand, x=x: h(x)
            med = interleaved(fns, args.rounds)
            print(f"{name} batch {batch}: " + ", ".join(f"{k} {v:.1f} us" for k, v in med.items())
                  + f"; hal/handwritten = {med['hal'] / med['handwritten']:.3f}")
            # HAL's own dispatch: CompiledModel.run on device buffers vs the raw function
            c = variants["hal"]
            exe = c.executables[0]
            buf = c.device.put(x)
            t = buf.tensor
            raw = exe.concrete
            d = interleaved({"run": lambda c=c, b=buf: c.run([b]),
                             "exe.run": lambda e=exe, b=buf: e.run([b]),
                             "tf.function": lambda r=raw, t=t: r(t)}, args.rounds * 3)
            print(f"  dispatch: CompiledModel.run {d['run'] - d['tf.function']:.1f} us, "
                  f"Executable.run {d['exe.run'] - d['tf.function']:.1f} us on top of the "
                  f"tf.function ({d['tf.function']:.1f} us)")


if __name__ == "__main__":
    main()
