"""HAL on each backend against the same model written directly in that framework.

    python bench/backends.py [--models lenet,...] [--batch 1,64] [--rounds 200]

For lenet, mobilenet_lite, resnet_lite and tiny_transformer at batch 1 and 64, each
pair below is timed interleaved (HAL call, then the hand-written call, alternating,
numpy in and numpy out on both sides) and the medians compared:

    HAL cpu@torch (opt_level 1)   vs  eager torch           (bench/handwritten/torch_models.py)
    HAL cpu@torch (opt_level 2)   vs  torch.compile of it
    HAL cpu@jax                   vs  jax.jit               (bench/handwritten/jax_models.py)
    HAL cpu@tf                    vs  tf.function(XLA)      (bench/handwritten/tf_models.py)
    HAL cpu@ort                   vs  a plain InferenceSession on the saved .onnx

Targets: HAL/X <= 1.10 at batch 64 and <= 1.25 at batch 1; the best HAL CPU path no
slower than ONNX Runtime at batch 64. Measurements, not tests: shared machines are noisy,
so read the ratios, not single numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hal  # noqa: E402
from bench.peers import Skip, jax_peer, ort_peer, tf_peer, torch_peer  # noqa: E402

PAIRS = [  # (label, HAL device, compile options, peer factory)
    ("torch eager", "cpu@torch", {"opt_level": 1}, torch_peer),
    ("torch.compile", "cpu@torch", {"opt_level": 2},
     lambda n, m: torch_peer(n, m, compiled=True)),
    ("jax.jit", "cpu@jax", {}, jax_peer),
    ("tf.function", "cpu@tf", {}, tf_peer),
    ("onnxruntime", "cpu@ort", {}, ort_peer),
]
MODELS = ["lenet", "mobilenet_lite", "resnet_lite", "tiny_transformer"]


def interleaved(a, b, x, rounds: int, budget_s: float) -> tuple[float, float]:
    """Median seconds of a(x) and b(x), alternating calls so drift hits both alike."""
    for _ in range(3):
        a(x)
        b(x)
    ta, tb = [], []
    deadline = time.perf_counter() + budget_s
    while len(ta) < rounds and (len(ta) < 7 or time.perf_counter() < deadline):
        t = time.perf_counter()
        a(x)
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b(x)
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch", default="1,64")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--budget", type=float, default=3.0, help="seconds per pair and batch")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batch.split(",")]
    rows = []
    print(f"{'model':<17}{'batch':>6}  {'peer':<14}{'HAL ms':>10}{'peer ms':>10}{'HAL/peer':>10}")
    for name in args.models.split(","):
        model = hal.models.get(name)
        for label, device, opts, factory in PAIRS:
            try:
                peer = factory(name, model)
                compiled = hal.compile(model, device, **opts)
            except (Skip, hal.HalError) as exc:
                print(f"{name:<17}{'':>6}  {label:<14}skipped: {exc}")
                continue
            for b in batches:
                x = hal.models.example_input(name, b)
                t_hal, t_peer = interleaved(lambda v: compiled(v), lambda v: peer(v), x,
                                            args.rounds, args.budget)
                ratio = t_hal / t_peer
                rows.append((name, b, label, t_hal, t_peer, ratio))
                print(f"{name:<17}{b:>6}  {label:<14}{t_hal * 1e3:>10.3f}{t_peer * 1e3:>10.3f}"
                      f"{ratio:>10.2f}", flush=True)
    print("\nbest HAL CPU path vs ONNX Runtime at the largest batch:")
    big = max(batches)
    for name in args.models.split(","):
        hal_best = min((r[3], r[2]) for r in rows if r[0] == name and r[1] == big)
        ort = [r[4] for r in rows if r[0] == name and r[1] == big and r[2] == "onnxruntime"]
        if ort:
            print(f"  {name:<17} best HAL {hal_best[0] * 1e3:8.3f} ms (vs {hal_best[1]}) "
                  f"ONNX Runtime {ort[0] * 1e3:8.3f} ms  ratio {hal_best[0] / ort[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
