"""How much does one process's figure differ from the next? Plain ONNX Runtime against HAL's
``cpu@ort``, each timed in several fresh processes, alternating.

    python bench/process_spread.py [--model resnet_lite] [--batch 1] [--processes 5] [--seconds 3]

Each process loads the model, warms up 50 calls, times calls for ``--seconds`` and prints its
median. The spread across processes running the same code is the floor under any comparison
of figures taken in different processes (``hal compare --isolate`` against an in-process peer).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import os, sys, tempfile, time
import numpy as np
import hal
from hal.inputs import example_inputs
from hal.frontends import to_model

kind, name, batch, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model = to_model(name)
x = example_inputs(model, batch)
if kind == "hal":
    compiled = hal.compile(model, "cpu@ort")
    call = lambda: compiled(*x)
else:
    import onnxruntime as ort
    path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    hal.save(model, path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = dict(zip([i.name for i in sess.get_inputs()], x))
    call = lambda: sess.run(None, feed)
for _ in range(50):
    call()
times, end = [], time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter()
    call()
    times.append(time.perf_counter() - t)
print(float(np.median(times)) * 1e3)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet_lite")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--processes", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    found: dict[str, list[float]] = {"plain ORT session": [], "HAL cpu@ort": []}
    for _ in range(args.processes):
        for label, kind in (("plain ORT session", "ort"), ("HAL cpu@ort", "hal")):
            out = subprocess.run([sys.executable, "-c", CHILD, kind, args.model,
                                  str(args.batch), str(args.seconds)],
                                 capture_output=True, text=True, check=True).stdout
            found[label].append(float(out.strip().splitlines()[-1]))
    print(f"{args.model} batch {args.batch}: median ms per call, one figure per fresh process")
    for label, ms in found.items():
        print(f"{label:<18} " + " ".join(f"{v:6.3f}" for v in ms)
              + f"   min {min(ms):.3f}  median {statistics.median(ms):.3f}  max {max(ms):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
