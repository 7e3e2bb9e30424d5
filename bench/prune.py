"""Structured pruning end to end: resnet_lite trained on digits (3x32x32), half of its channels
removed with hal.prune, fine-tuned, and measured against the unpruned model.

    python bench/prune.py                       # 15 epochs, prune 0.5, 5 fine-tuning epochs
    python bench/prune.py --ratio 0.5 --epochs 15 --finetune-epochs 5 --rounds 3 --budget 2

Prints the test accuracy before and after, FLOPs and parameters (hal.compression.cost, batch 1),
hal.prune's report, and the p50 latency of both models at batch 64 on cpu@ort from one
hal.compare run (both models in the same run, measured ``--rounds`` times in rotated order).
Training runs on cpu@torch with the same seed for both models.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import hal
from hal.compression import cost


def accuracy(model: hal.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((hal.compile(model, "cpu@ort")(x)[0].argmax(1) == y).mean())


def run_pipeline(epochs: int = 15, finetune_epochs: int = 5, ratio: float = 0.5,
                 lr: float = 2e-3, finetune_lr: float = 1e-3, batch_size: int = 32,
                 seed: int = 0, importance: str = "l1", measure: bool = True,
                 device: str = "cpu@ort", batch: int = 64, budget_s: float = 2.0,
                 rounds: int = 3, log=None) -> dict:
    """Train, prune, fine-tune and (``measure``) time both models in one hal.compare run;
    the numbers as a dict."""
    say = log or (lambda *a: None)
    x, y = hal.data.digits("train", size=32, channels=3)
    xt, yt = hal.data.digits("test", size=32, channels=3)
    train_kw = dict(device="cpu@torch", batch_size=batch_size, schedule="cosine", seed=seed,
                    progress=False)
    t0 = time.perf_counter()
    base = hal.train("resnet_lite", (x, y), epochs=epochs, lr=lr, **train_kw).model
    say(f"trained resnet_lite for {epochs} epochs in {time.perf_counter() - t0:.0f} s")
    pruned = hal.prune(base, ratio=ratio, importance=importance)
    report = pruned.compression
    t0 = time.perf_counter()
    tuned = hal.train(pruned, (x, y), epochs=finetune_epochs, lr=finetune_lr, **train_kw).model
    say(f"fine-tuned the pruned model for {finetune_epochs} epochs in "
        f"{time.perf_counter() - t0:.0f} s")
    out = {"ratio": ratio, "importance": importance, "epochs": epochs,
           "finetune_epochs": finetune_epochs, "test_samples": int(len(yt)),
           "acc_before": accuracy(base, xt, yt), "acc_pruned": accuracy(pruned, xt, yt),
           "acc_after": accuracy(tuned, xt, yt),
           "flops_before": cost.flops(base), "flops_after": cost.flops(tuned),
           "params_before": cost.params(base), "params_after": cost.params(tuned),
           "report": report}
    out["flops_ratio"] = out["flops_before"] / out["flops_after"]
    out["params_ratio"] = out["params_before"] / out["params_after"]
    if measure:
        with tempfile.TemporaryDirectory() as tmp:
            paths = [str(Path(tmp) / "resnet_lite.onnx"), str(Path(tmp) / "resnet_lite_pruned.onnx")]
            base.save(paths[0])
            tuned.save(paths[1])
            results = hal.compare(models=paths, devices=[device], batch=batch,
                                  budget_s=budget_s, rounds=rounds)
        rows = {Path(r.model).stem: r for r in results}
        for key, name in (("before", "resnet_lite"), ("after", "resnet_lite_pruned")):
            r = rows[name]
            if r.error:
                raise SystemExit(f"hal.compare failed on {name}: {r.error}")
            out[f"p50_ms_{key}"] = r.p50_ms
            out[f"p50_spread_ms_{key}"] = r.p50_spread_ms
            out[f"round_p50_ms_{key}"] = list(r.round_p50_ms)
        out["p50_ratio"] = out["p50_ms_before"] / out["p50_ms_after"]
        out["device"], out["batch"], out["rounds"] = device, batch, rounds
        out["device_name"] = rows["resnet_lite"].device_name
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--importance", default="l1", choices=("l1", "l2", "bn_gamma"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per row")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu@ort")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    r = run_pipeline(args.epochs, args.finetune_epochs, args.ratio, importance=args.importance,
                     device=args.device, batch=args.batch, budget_s=args.budget,
                     rounds=args.rounds, log=print)
    print(r["report"])
    print()
    print(f"resnet_lite on digits 3x32x32 ({r['test_samples']} test images), ratio "
          f"{r['ratio']}, importance {r['importance']}")
    print(f"  test accuracy   {r['acc_before']:.2%} -> {r['acc_after']:.2%} after "
          f"{r['finetune_epochs']} fine-tuning epochs ({r['acc_pruned']:.2%} right after "
          f"pruning); drop {100 * (r['acc_before'] - r['acc_after']):.2f} points")
    print(f"  FLOPs (batch 1) {r['flops_before']:,} -> {r['flops_after']:,} "
          f"({r['flops_ratio']:.2f}x fewer)")
    print(f"  params          {r['params_before']:,} -> {r['params_after']:,} "
          f"({r['params_ratio']:.2f}x fewer)")
    print(f"  p50 at batch {r['batch']} on {r['device']} ({r['device_name']}), one hal.compare "
          f"run, median of {r['rounds']} rounds: {r['p50_ms_before']:.2f} ms "
          f"(+-{r['p50_spread_ms_before'] or 0:.2f}) -> {r['p50_ms_after']:.2f} ms "
          f"(+-{r['p50_spread_ms_after'] or 0:.2f}): {r['p50_ratio']:.2f}x lower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
