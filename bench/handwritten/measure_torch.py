"""HAL ``cpu@torch`` against the hand-written eager torch twin: interleaved medians.

    python bench/handwritten/measure_torch.py [model] [runs]

Each round times one call of every contender in turn, so drift on a shared machine hits
them alike; the median over rounds is reported. "dispatch" is HAL's own share of a call:
the compiled model's time minus the time of its fx GraphModule called directly.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

import hal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_models import build


def measure(name: str = "lenet", runs: int = 400, batches=(1, 64)) -> list[dict]:
    torch.set_grad_enabled(False)
    module = hal.models.build(name)
    twin = build(name, module)
    compiled = hal.compile(hal.models.get(name), "cpu@torch")
    gm = compiled.executables[0].module
    rows = []
    for batch in batches:
        x = hal.models.example_input(name, batch)
        xt = torch.from_numpy(x)
        buf = compiled.device.put(x)
        contenders = {
            "eager torch (hand-written)": lambda xt=xt: twin(xt),
            "hal cpu@torch, numpy in/out": lambda x=x: compiled(x),
            "hal cpu@torch, run(buffers)": lambda buf=buf: compiled.run([buf]),
            "fx GraphModule alone": lambda xt=xt: gm.forward(xt),
        }
        times = {k: [] for k in contenders}
        for fn in contenders.values():  # warm-up
            for _ in range(20):
                fn()
        for _ in range(runs):
            for k, fn in contenders.items():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
        eager = med["eager torch (hand-written)"]
        rows.append({"model": name, "batch": batch, **{k: round(v, 1) for k, v in med.items()},
                     "ratio hal/eager": round(med["hal cpu@torch, numpy in/out"] / eager, 3),
                     "dispatch us (call - fx)": round(med["hal cpu@torch, numpy in/out"]
                                                      - med["fx GraphModule alone"], 1),
                     "dispatch us (run - fx)": round(med["hal cpu@torch, run(buffers)"]
                                                     - med["fx GraphModule alone"], 1)})
    return rows


def dispatch_overhead(rounds: int = 40, calls: int = 2000) -> dict:
    """HAL's own cost per call, on a one-op model where the framework's work is ~2 us:
    best-of-rounds time of each layer, minus the generated fx code called directly."""
    from hal import nn

    compiled = hal.compile(nn.Sequential(nn.ReLU()), "cpu@torch", input_shape=(None, 4))
    exe = compiled.executables[0]
    x = hal.models.example_input("mlp", 1)[:, :4].copy()
    xt, buf = torch.from_numpy(x), compiled.device.put(x)
    layers = {"fx forward": lambda: exe.module.forward(xt),
              "Executable.run": lambda: exe.run([buf]),
              "CompiledModel.run": lambda: compiled.run([buf]),
              "CompiledModel(x)": lambda: compiled(x)}
    best = {k: float("inf") for k in layers}
    for _ in range(rounds):
        for k, fn in layers.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[k] = min(best[k], (time.perf_counter() - t0) / calls * 1e6)
    base = best["fx forward"]
    return {k: round(v, 2) for k, v in best.items()} | {
        f"{k} - fx": round(v - base, 2) for k, v in best.items() if k != "fx forward"}


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "lenet"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {runs} "
          f"interleaved rounds, microseconds per call")
    for row in measure(name, runs):
        print(row)
    print("dispatch (best of rounds, us):", dispatch_overhead())
