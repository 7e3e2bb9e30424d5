"""HAL's training step against the same model and loop written directly in each framework.

    python bench/train.py [--models lenet,mlp] [--batch 64,1] [--frameworks torch,jax,tf]
                          [--budget 20] [--chunk 5] [--json FILE]

For each framework F, one fresh process (``KERAS_BACKEND=F``) builds from the zoo model's
initial weights, with AdamW (lr 1e-3, weight decay 0.01) and the same digits micro-batches:

    HAL cpu@F          Trainer.step: HAL's training graph on F's autodiff and optimizer
    hand-written F     torch eager + torch.optim | jax.jit + optax |
                       tf.function + Keras AdamW (and the same with XLA)   (bench/handwritten/)
    Keras 3 fit        model.fit of the same model on Keras's F backend

and times them interleaved: rounds of ``--chunk`` steps per contender, the order rotated each
round, until ``--budget`` seconds per (model, batch). Every step takes numpy arrays and reads
its loss back. Reported: the median step time of each, HAL/peer of the medians (below 1:
HAL is faster) and each one's first loss (the same initial weights and first batch: they
must agree). Target: HAL <= 1.10x the hand-written loop in its framework at batch 64.
Measurements, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH-TRAIN "
PEERS = {"torch": [("torch eager + torch.optim", "torch", {})],
         "jax": [("jax.jit + optax", "jax", {})],
         "tf": [("tf.function + Keras AdamW", "tf", {}),
                ("tf.function(XLA) + Keras AdamW", "tf", {"jit_compile": True})]}


class PerStep:
    """A contender that runs one step per call: each step timed on its own."""

    def __init__(self, step):
        self.step = step

    def first(self, batch) -> float:
        return self.step(batch)

    def chunk(self, batches) -> list[float]:
        out = []
        for b in batches:
            t = time.perf_counter()
            self.step(b)
            out.append(time.perf_counter() - t)
        return out


class FitChunks:
    """Keras's fit: one call per chunk, one step more than timed (the first ends its setup)."""

    def __init__(self, fit):
        self.fit = fit

    def first(self, batch) -> float:
        return self.fit.run([batch])[1]

    def chunk(self, batches) -> list[float]:
        return self.fit.run([batches[0], *batches])[0]


def contenders(framework: str, name: str) -> tuple[dict, dict]:
    """(label -> contender, label -> why it could not be built)."""
    import numpy as np

    import hal
    from hal.trainer import TrainSpec
    from hal.training import build
    from hal.training.settings import training_device

    sd = {k: np.asarray(v, np.float32) for k, v in hal.models.build(name).state_dict().items()}
    dev = training_device(f"cpu@{framework}")
    trainer = dev.backend.compile_training(build(hal.models.get(name)), dev, TrainSpec())
    out, skipped = {f"HAL cpu@{framework}": PerStep(lambda b: trainer.step([b], [1.0])[0])}, {}
    for label, module, options in PEERS[framework]:
        hand = __import__(f"bench.handwritten.train_{module}", fromlist=["build"])
        out[label] = PerStep(hand.build(name, sd, **options))
    try:
        from bench.handwritten import train_keras

        out[f"Keras 3 fit ({framework})"] = FitChunks(train_keras.build(name, sd))
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        skipped[f"Keras 3 fit ({framework})"] = f"{type(exc).__name__}: {exc}"
    return out, skipped


def measure(framework: str, name: str, batch: int, budget: float, chunk: int) -> dict:
    import hal
    from hal.comparison.train import training_data

    runners, skipped = contenders(framework, name)
    data, what = training_data(hal.models.get(name), batch, 4 * chunk)
    first = {label: float(c.first(data[0])) for label, c in runners.items()}
    times: dict[str, list[float]] = {label: [] for label in runners}
    labels, position, rounds = list(runners), 0, 0
    deadline = time.perf_counter() + budget
    while rounds < 3 or time.perf_counter() < deadline:
        k = rounds % len(labels)
        for label in labels[k:] + labels[:k]:
            batches = [data[(position + i) % len(data)] for i in range(chunk)]
            spent = runners[label].chunk(batches)
            if rounds:  # the first round warms up
                times[label] += spent
        position += chunk
        rounds += 1
    med = {label: statistics.median(t) for label, t in times.items()}
    return {"framework": framework, "model": name, "batch": batch, "data": what,
            "median_ms": {k: v * 1e3 for k, v in med.items()},
            "steps": {k: len(v) for k, v in times.items()}, "first_loss": first,
            "skipped": skipped}


def worker(args) -> int:
    sys.path.insert(0, str(ROOT))
    for name in args.models.split(","):
        for b in [int(b) for b in args.batch.split(",")]:
            row = measure(args.worker, name, b, args.budget, args.chunk)
            print(MARK + json.dumps(row), flush=True)
    return 0


def run_framework(framework: str, args) -> list[dict]:
    keras_name = {"tf": "tensorflow"}.get(framework, framework)
    env = {**os.environ, "KERAS_BACKEND": keras_name, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, __file__, "--worker", framework, "--models", args.models, "--batch",
           args.batch, "--budget", str(args.budget), "--chunk", str(args.chunk)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rows = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines()
            if line.startswith(MARK)]
    if proc.returncode:
        print(f"{framework}: worker exited {proc.returncode}: {proc.stderr[-1500:]}")
    return rows


def print_row(row: dict) -> None:
    med, hal_label = row["median_ms"], f"HAL cpu@{row['framework']}"
    for label, ms in med.items():
        ratio = "" if label == hal_label else f"{med[hal_label] / ms:8.2f}"
        print(f"{row['model']:<7}{row['batch']:>6}  {label:<32}{ms:>10.3f}{ratio:>9}"
              f"{row['steps'][label]:>7}  {row['first_loss'][label]:.6f}")
    for label, why in row["skipped"].items():
        print(f"{row['model']:<7}{row['batch']:>6}  {label:<32}skipped: {why[:200]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,mlp")
    p.add_argument("--batch", default="64,1")
    p.add_argument("--frameworks", default="torch,jax,tf")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds of interleaved rounds per model and batch")
    p.add_argument("--chunk", type=int, default=5, help="steps per contender per round")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"{time.strftime('%Y-%m-%d')}; median ms per step; HAL/peer; steps timed; first loss")
    rows = []
    for framework in args.frameworks.split(","):
        for row in run_framework(framework, args):
            rows.append(row)
            print_row(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
