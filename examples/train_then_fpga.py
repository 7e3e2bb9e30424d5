"""Train LeNet on digits with jax, then run the trained model in int8 on the emulated FPGA.

    python examples/train_then_fpga.py [--device cpu@jax] [--epochs 5] [--target fpga@emu]

Prints the test accuracy of the trained fp32 model on the training device and of its int8
twin on the target (calibrated on 256 training images). The FPGA is simulated.
"""

from __future__ import annotations

import argparse

import numpy as np

import hal


def accuracy(compiled, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    hits = sum(int((compiled(x[i:i + batch])[0].argmax(1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu@jax", help="a device that trains")
    p.add_argument("--target", default="fpga@emu", help="where the int8 model runs")
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args(argv)

    train, (x_test, y_test) = hal.data.digits("train", 28), hal.data.digits("test", 28)
    result = hal.train("lenet", train, device=args.device, epochs=args.epochs, batch_size=32,
                       lr=2e-3, schedule="cosine", validation=(x_test, y_test),
                       progress=False)
    fp32 = accuracy(hal.compile(result.model, args.device), x_test, y_test)
    int8 = hal.compile(result.model, args.target, precision="int8",
                       calibration=train[0][:256])
    on_target = accuracy(int8, x_test, y_test)
    label = " (simulated)" if int8.device.info.simulated else ""
    print(f"trained on {args.device}: fp32 test accuracy {fp32:.2%}")
    print(f"int8 on {args.target}{label}: test accuracy {on_target:.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
