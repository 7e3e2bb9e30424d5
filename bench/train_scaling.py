"""Data-parallel scaling of hal.train on each framework's engine, measured here.

    python bench/train_scaling.py [--models lenet] [--frameworks torch,jax,tf]
                                  [--workers 1,2] [--batch 64] [--epochs 2] [--json FILE]

For each framework and worker count, one ``hal.train`` of the model on the digits training
split at a global batch of ``--batch`` (DistributedDataParallel over processes on torch, a
device mesh on jax, MirroredStrategy on tf; workers=1 is the plain single-device trainer).
Reported: the samples/s of the last epoch (the loop's own clock, so process start-up and
compilation in the first epoch are left out), the speed-up over one worker and the scaling
efficiency (speed-up / workers). Each worker count runs in a fresh process, so every engine
starts alike. On a machine with few cores the workers share them: read the efficiency as
the engine's overhead here, not as what more machines would give (``hal train
--estimate-scaling`` models that).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH-SCALING "


def worker(args) -> int:
    sys.path.insert(0, str(ROOT))
    import hal

    framework, workers = args.worker.split(":")
    model = hal.models.get(args.models)
    shape = model.inputs[0].shape
    train = hal.data.digits("train", shape[2], shape[1])
    res = hal.train(model, train, device=f"cpu@{framework}", workers=int(workers),
                    epochs=args.epochs, batch_size=args.batch, progress=False)
    last = res.history[-1]
    print(MARK + json.dumps({"framework": framework, "workers": int(workers),
                             "model": args.models, "samples_per_s": last["samples_per_s"],
                             "loss": last["loss"],
                             "engine": res.settings.get("parallel", {}).get("engine", "")}),
          flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet")
    p.add_argument("--frameworks", default="torch,jax,tf")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"{time.strftime('%Y-%m-%d')}; {args.models}, global batch {args.batch}, samples/s "
          f"of epoch {args.epochs}")
    rows = []
    for framework in args.frameworks.split(","):
        base = None
        for w in [int(v) for v in args.workers.split(",")]:
            cmd = [sys.executable, __file__, "--worker", f"{framework}:{w}", "--models",
                   args.models, "--batch", str(args.batch), "--epochs", str(args.epochs)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            found = [json.loads(line[len(MARK):]) for line in proc.stdout.splitlines()
                     if line.startswith(MARK)]
            if proc.returncode or not found:
                print(f"{framework:<6}{w:>3}  failed: {proc.stderr.strip()[-600:]}")
                continue
            row = found[0]
            base = row["samples_per_s"] if w == 1 else base
            if base:
                row["speedup"] = row["samples_per_s"] / base
                row["efficiency"] = row["speedup"] / w
            rows.append(row)
            print(f"{framework:<6}{w:>3}  {row['samples_per_s']:>10,.0f} samples/s"
                  + (f"  x{row['speedup']:.2f}  efficiency {row['efficiency']:.0%}"
                     if "speedup" in row else "") + f"  {row['engine']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
