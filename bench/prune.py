"""Structured pruning end to end: resnet_lite trained on digits (3x32x32), half of its channels
removed with hal.prune, fine-tuned, and measured against the unpruned model.

    python bench/prune.py                    # train 15 epochs, prune 0.5, fine-tune 10 epochs
    python bench/prune.py --importance l1 --seed 1 --rounds 3 --budget 2
    python bench/prune.py --finetune-optimizer adamw --finetune-lr 5e-3   # the earlier recipe

Two pruned models come from the same trained baseline: ``hal.prune(ratio=0.5)``, half of the
channels of every group (the residual streams included), and ``hal.prune(ratio=0.5,
keep_residual=True)``, half of the channels inside every block, the residual streams whole.
Each is fine-tuned alike. Prints hal.prune's reports, the test accuracy before and after, FLOPs
and parameters (hal.compression.cost, batch 1), and the p50 latency of the three models at
batch 64 on cpu@ort from one hal.compare run (measured ``--rounds`` times in rotated order).

Training runs on cpu@torch: the baseline for 15 epochs (AdamW, lr 2e-3, cosine), each pruned
model for 10 (SGD with Nesterov momentum 0.9, lr 0.05 after 40 warm-up updates, cosine,
weight decay 5e-4: pruning half of a network this small costs most of its accuracy at first,
so fine-tuning retrains more than it repairs; see docs/pruning.md), all with ``--seed``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import hal
from hal.compression import cost

#: the pruned models: name -> hal.prune's options besides ratio, importance and allocation
VARIANTS = {"pruned": {}, "pruned_keep_residual": {"keep_residual": True}}
#: hal.train's optimizer options of the fine-tuning, by optimizer
FINETUNE_OPTIONS = {"sgd": {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                    "adamw": {}}


def accuracy(model: hal.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((hal.compile(model, "cpu@ort")(x)[0].argmax(1) == y).mean())


def run_pipeline(epochs: int = 15, finetune_epochs: int = 10, ratio: float = 0.5,
                 lr: float = 2e-3, finetune_lr: float = 0.05, warmup_steps: int = 40,
                 finetune_optimizer: str = "sgd", batch_size: int = 32, seed: int = 0,
                 importance: str = "bn_gamma", allocation: str = "uniform",
                 variants: dict | None = None, measure: bool = True, device: str = "cpu@ort",
                 batch: int = 64, budget_s: float = 2.0, rounds: int = 3, save: str | None = None,
                 log=None) -> dict:
    """Train, prune each variant, fine-tune it, and (``measure``) time the baseline and every
    variant in one hal.compare run; ``save``: a folder to keep the models in
    (resnet_lite_<name>.onnx), to time them again with ``hal compare``. Returns
    {"baseline": {...}, variant name: {...}, ...}."""
    say = log or (lambda *a: None)
    x, y = hal.data.digits("train", size=32, channels=3)
    xt, yt = hal.data.digits("test", size=32, channels=3)
    train_kw = dict(device="cpu@torch", batch_size=batch_size, schedule="cosine", seed=seed,
                    progress=False)
    t0 = time.perf_counter()
    base = hal.train("resnet_lite", (x, y), epochs=epochs, lr=lr, **train_kw).model
    say(f"trained resnet_lite for {epochs} epochs in {time.perf_counter() - t0:.0f} s")
    models = {"baseline": base}
    out: dict = {"settings": {"ratio": ratio, "importance": importance,
                              "allocation": allocation, "epochs": epochs,
                              "finetune_epochs": finetune_epochs, "finetune_lr": finetune_lr,
                              "finetune_optimizer": finetune_optimizer,
                              "warmup_steps": warmup_steps, "seed": seed,
                              "test_samples": int(len(yt))},
                 "baseline": {"accuracy": accuracy(base, xt, yt), "flops": cost.flops(base),
                              "params": cost.params(base)}}
    for name, options in (VARIANTS if variants is None else variants).items():
        pruned = hal.prune(base, ratio=ratio, importance=importance, allocation=allocation,
                           **options)
        t0 = time.perf_counter()
        tuned = hal.train(pruned, (x, y), epochs=finetune_epochs, lr=finetune_lr,
                          optimizer=finetune_optimizer, warmup_steps=warmup_steps,
                          **FINETUNE_OPTIONS[finetune_optimizer], **train_kw).model
        say(f"{name}: fine-tuned for {finetune_epochs} epochs in {time.perf_counter() - t0:.0f} s")
        models[name] = tuned
        r = {"options": options, "report": pruned.compression,
             "accuracy_pruned": accuracy(pruned, xt, yt), "accuracy": accuracy(tuned, xt, yt),
             "flops": cost.flops(tuned), "params": cost.params(tuned)}
        r["drop_points"] = 100 * (out["baseline"]["accuracy"] - r["accuracy"])
        r["flops_ratio"] = out["baseline"]["flops"] / r["flops"]
        r["params_ratio"] = out["baseline"]["params"] / r["params"]
        out[name] = r
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        for name, model in models.items():
            model.save(str(Path(save) / f"resnet_lite_{name}.onnx"))
    if measure:
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for name, model in models.items():
                paths[name] = str(Path(tmp) / f"resnet_lite_{name}.onnx")
                model.save(paths[name])
            results = hal.compare(models=list(paths.values()), devices=[device], batch=batch,
                                  budget_s=budget_s, rounds=rounds)
        rows = {r.model: r for r in results}
        for name, path in paths.items():
            row = rows[path]
            if row.error:
                raise SystemExit(f"hal.compare failed on {name}: {row.error}")
            out[name].update(p50_ms=row.p50_ms, p50_spread_ms=row.p50_spread_ms,
                             round_p50_ms=list(row.round_p50_ms))
        for name in models:
            out[name]["p50_ratio"] = out["baseline"]["p50_ms"] / out[name]["p50_ms"]
        out["settings"].update(device=device, device_name=rows[paths["baseline"]].device_name,
                               batch=batch, rounds=rounds, budget_s=budget_s)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--importance", default="bn_gamma", choices=("l1", "l2", "bn_gamma"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--allocation", default="uniform", choices=("uniform", "global"))
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--finetune-optimizer", default="sgd", choices=sorted(FINETUNE_OPTIONS))
    ap.add_argument("--finetune-lr", type=float, default=0.05)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated pruned models among {', '.join(VARIANTS)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per row")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu@ort")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--save", metavar="DIR", help="keep the models in DIR to time them again")
    args = ap.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        ap.error(f"--variants takes names among {', '.join(VARIANTS)}; got {args.variants!r}")
    r = run_pipeline(args.epochs, args.finetune_epochs, args.ratio,
                     finetune_lr=args.finetune_lr, finetune_optimizer=args.finetune_optimizer,
                     importance=args.importance, allocation=args.allocation, seed=args.seed,
                     variants={n: VARIANTS[n] for n in names}, device=args.device,
                     batch=args.batch, budget_s=args.budget, rounds=args.rounds,
                     save=args.save, log=print)
    s, b = r["settings"], r["baseline"]
    for name in r:
        if name not in ("settings", "baseline"):
            print()
            print(r[name]["report"])
    print()
    print(f"resnet_lite on digits 3x32x32 ({s['test_samples']} test images), ratio {s['ratio']}, "
          f"importance {s['importance']}, allocation {s['allocation']}, fine-tuned "
          f"{s['finetune_epochs']} epochs ({s['finetune_optimizer']}, lr {s['finetune_lr']}), "
          f"seed {s['seed']}; p50 at batch {s['batch']} on "
          f"{s['device']} ({s['device_name']}), one hal.compare run, median of {s['rounds']} "
          f"rounds")
    print(f"  {'model':<22} {'test accuracy':>30} {'FLOPs (batch 1)':>24} {'params':>20} "
          f"{'p50':>22}")
    base_acc = f"{b['accuracy']:.2%} ({round(b['accuracy'] * s['test_samples'])}/" \
               f"{s['test_samples']})"
    print(f"  {'baseline':<22} {base_acc:>30} {b['flops']:>24,} {b['params']:>20,} "
          f"{b['p50_ms']:>13.2f} ms +-{b['p50_spread_ms'] or 0:.2f}")
    for name in r:
        if name in ("settings", "baseline"):
            continue
        v = r[name]
        right = round(v["accuracy"] * s["test_samples"])
        acc = f"{v['accuracy']:.2%} ({-v['drop_points']:+.2f}; {right}/{s['test_samples']})"
        flops = f"{v['flops']:,} ({v['flops_ratio']:.2f}x fewer)"
        params = f"{v['params']:,} ({v['params_ratio']:.2f}x)"
        p50 = f"{v['p50_ms']:.2f} ms ({v['p50_ratio']:.2f}x lower)"
        print(f"  {name:<22} {acc:>30} {flops:>24} {params:>20} {p50:>22}")
        print(f"  {'':<22} ({v['accuracy_pruned']:.2%} right after pruning, before fine-tuning)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
