"""Distillation on digits: a half-width LeNet taught by an int8 LeNet on the emulated FPGA,
against the same student trained on the labels alone.

    python bench/distill.py [--seeds 0,1,2] [--epochs 30] [--lr 2e-3] [--temperature 4]
                            [--alpha 0.9] [--samples 0] [--device cpu@jax]
                            [--teacher-device fpga@emu] [--teacher-epochs 10]
                            [--teacher-shift 2] [--teacher FILE] [--save-teacher FILE]
                            [--json FILE]

The teacher: ``hal.models.get("lenet")`` trained on the digits train split on cpu@torch
(``--teacher-epochs``, seed 0) and on copies of it shifted by ``--teacher-shift`` pixels up,
down, left and right (0: none; the students never see the shifted copies), or read from
``--teacher``; compiled int8 for ``--teacher-device`` and calibrated on 256 training
images. For each seed, the student ``half_lenet(seed)`` (the same initial weights
for both runs) trains ``--epochs`` epochs on ``--device`` with the same optimizer, schedule,
batch order and seed twice, on the first ``--samples`` training images (0: all 1,257; a
small labelled transfer set is where a teacher's soft targets carry most): through
``hal.distill`` and through ``hal.train``. Printed: the
teacher's test accuracy in fp32 and int8, and each student's test accuracy per seed.
Measurements, not tests.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import hal
from hal.compression.distill_students import half_lenet


def test_accuracy(model: hal.Model, device: str, x: np.ndarray, y: np.ndarray,
                  **options) -> float:
    compiled = hal.compile(model, device, **options)
    return float((compiled(x)[0].argmax(axis=1) == y).mean())


def shifted(x: np.ndarray, y: np.ndarray, px: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` and its copies moved ``px`` pixels up, down, left and right."""
    if not px:
        return x, y
    moves = [(-px, 0), (px, 0), (0, -px), (0, px)]
    xs = [x] + [np.roll(x, move, axis=(2, 3)) for move in moves]
    return np.concatenate(xs), np.concatenate([y] * len(xs))


def teacher(epochs: int, x: np.ndarray, y: np.ndarray, shift: int) -> hal.Model:
    return hal.train(hal.models.get("lenet"), shifted(x, y, shift), device="cpu@torch",
                     epochs=epochs, batch_size=32, lr=2e-3, schedule="cosine", seed=0,
                     progress=False).model


def compare(args: argparse.Namespace, teacher_model: hal.Model, int8: dict, seed: int,
            train: tuple, test: tuple) -> dict:
    """The student's test accuracy with the teacher and alone, from the same start."""
    options = dict(device=args.device, epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                   schedule="cosine", seed=seed, progress=False)
    student = half_lenet(seed)
    t0 = time.perf_counter()
    taught = hal.distill(teacher_model, student, train, teacher_device=args.teacher_device,
                         teacher_options=int8, temperature=args.temperature,
                         alpha=args.alpha, validation=test, **options)
    t1 = time.perf_counter()
    alone = hal.train(student, train, validation=test, **options)
    t2 = time.perf_counter()
    return {"seed": seed, "with_teacher": taught.history[-1]["val_accuracy"],
            "alone": alone.history[-1]["val_accuracy"],
            "seconds_with_teacher": round(t1 - t0, 1), "seconds_alone": round(t2 - t1, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--device", default="cpu@jax")
    p.add_argument("--teacher-device", default="fpga@emu")
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--teacher-shift", type=int, default=2)
    p.add_argument("--teacher", default=None, help="a trained teacher (.onnx) to use as is")
    p.add_argument("--save-teacher", default=None)
    p.add_argument("--samples", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    train, test = hal.data.digits("train", 28), hal.data.digits("test", 28)
    if args.teacher:
        teacher_model = hal.load(args.teacher)
        made = f"read from {args.teacher}"
    else:
        teacher_model = teacher(args.teacher_epochs, *train, args.teacher_shift)
        made = (f"{args.teacher_epochs} epochs on cpu@torch, training images shifted by "
                f"{args.teacher_shift} px too")
    if args.save_teacher:
        teacher_model.save(args.save_teacher)
    transfer = (train[0][:args.samples or None], train[1][:args.samples or None])
    int8 = {"precision": "int8", "calibration": train[0][:256]}
    fp32_acc = test_accuracy(teacher_model, "cpu", *test)
    int8_acc = test_accuracy(teacher_model, args.teacher_device, *test, **int8)
    print(f"teacher lenet ({made}): test accuracy fp32 "
          f"{100 * fp32_acc:.2f} %, int8 on {args.teacher_device} {100 * int8_acc:.2f} %")
    print(f"student half_lenet on {args.device}: {args.epochs} epochs, batch {args.batch}, "
          f"adamw lr {args.lr:g} cosine, on {len(transfer[1])} training images; "
          f"T={args.temperature:g}, alpha={args.alpha:g}")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = compare(args, teacher_model, int8, seed, transfer, test)
        rows.append(row)
        print(f"  seed {seed}: with teacher {100 * row['with_teacher']:.2f} %, alone "
              f"{100 * row['alone']:.2f} % ({row['seconds_with_teacher']} s, "
              f"{row['seconds_alone']} s)", flush=True)
    gains = [r["with_teacher"] - r["alone"] for r in rows]
    print(f"mean gain {100 * np.mean(gains):+.2f} points; teacher at least as good as alone in "
          f"{sum(g >= 0 for g in gains)} of {len(gains)} seeds")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "teacher_fp32": fp32_acc, "teacher_int8": int8_acc,
                       "students": rows}, f, indent=1)


if __name__ == "__main__":
    main()
