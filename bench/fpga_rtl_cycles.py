"""Cycles of LeNet's layers on the Verilog hal_int8 (fpga@rtl), per RTL target.

    python bench/fpga_rtl_cycles.py [--batch N] [--json]

LeNet (models/lenet.py): conv 1->20 5x5 + pool 2, conv 20->50 5x5 + pool 2, gemm 800->500 +
ReLU, gemm 500->10. The core's cycle count does not depend on the data, so seeded int8 weights
give LeNet's exact counts; each layer is also checked bit for bit against the spec. Per target
the core is simulated with that target's parameters (PE array, requantizers, buffers), and the
latency and throughput are "estimated: cycle-accurate simulation x Fmax" with the Fmax nextpnr
reported for the built bitstream (manifest.json). The memory model answers reads after 24 and
writes after 12 cycles (READ_LATENCY, WRITE_LATENCY of the rtl transport).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from hal.backends.fpga import spec
from hal.backends.fpga.driver import Driver
from hal.backends.fpga.files import accelerator_dir
from hal.backends.fpga.qdq import Layer
from hal.backends.fpga.transports import rtl

LENET = [  # name, op, c, h, o, k, pool, act_min
    ("conv1", "conv", 1, 28, 20, 5, 2, -128),
    ("conv2", "conv", 20, 12, 50, 5, 2, -128),
    ("fc1", "gemm", 800, 1, 500, 1, 0, 0),
    ("fc2", "gemm", 500, 1, 10, 1, 0, -128),
]
LABEL = "estimated: cycle-accurate simulation x Fmax"


def layers(rng):
    for name, op, c, h, o, k, pool, lo in LENET:
        w = rng.integers(-128, 128, (o, c, k, k) if op == "conv" else (o, c), dtype=np.int8)
        b = rng.integers(-20000, 20000, o).astype(np.int32)
        m = rng.integers(1 << 29, (1 << 31) - 1, o).astype(np.int32)
        s = rng.integers(38, 42, o).astype(np.int32)
        shape = (c, h, h) if op == "conv" else (c,)
        yield name, Layer(op, [], "x", "y", w, b, m, s, act_min=lo, pool=pool, in_shape=shape)


def run(target: str | None, batch: int) -> dict:
    acc = accelerator_dir()
    man = json.loads((acc / "manifest.json").read_text())
    t = rtl.RtlTransport()
    t.load(acc, man, target)
    drv, rng = Driver(t), np.random.default_rng(0)
    x = rng.integers(-128, 128, (batch, 1, 28, 28), dtype=np.int8)
    rows = []
    for name, layer in layers(rng):
        if layer.op == "conv":
            want = spec.conv2d(x, layer.w, layer.bias, layer.m, layer.s, act_min=layer.act_min,
                               pool=layer.pool)
        else:
            x = x.reshape(batch, -1)
            want = spec.gemm(x, layer.w, layer.bias, layer.m, layer.s, act_min=layer.act_min)
        ym = t.allocate(want.nbytes)
        cycles = drv.run(drv.load(layer), drv.upload(x), ym, batch)
        got = ym.read(np.int8, want.size).reshape(want.shape)
        assert np.array_equal(got, want), f"{name}: RTL differs from the spec"
        macs = int(np.prod(want.shape)) * int(np.prod(layer.w.shape[1:])) * \
            (layer.pool ** 2 if layer.pool > 1 else 1)
        rows.append({"layer": name, "describe": layer.describe(), "cycles": cycles,
                     "macs": macs, "macs_per_cycle": round(macs / cycles, 3)})
        x = got
    t.close()
    entry = (man.get("targets") or {}).get(target or "", {})
    total = sum(r["cycles"] for r in rows)
    out = {"target": target or "sim (default fpga@rtl parameters)", "params": t.params,
           "batch": batch, "layers": rows, "cycles_per_inference": total / batch,
           "status": entry.get("status"), "fmax_mhz": entry.get("fmax_mhz")}
    if entry.get("fmax_mhz"):
        f = entry["fmax_mhz"] * 1e6
        out.update({"label": LABEL, "latency_ms": round(total / batch / f * 1e3, 3),
                    "throughput_inf_per_s": round(f / (total / batch), 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--target", action="append")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [run(t, args.batch) for t in (args.target or [None, "ecp5-25f", "ice40-up5k"])]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        p = r["params"]
        print(f"\n{r['target']}: PE {p['PE_OUT']}x{p['PE_IN']}, batch {r['batch']}")
        for row in r["layers"]:
            print(f"  {row['layer']:6s} {row['describe']:24s} {row['cycles']:>10,d} cycles "
                  f"{row['macs_per_cycle']:6.2f} MAC/cycle")
        print(f"  per inference {r['cycles_per_inference']:,.0f} cycles")
        if "latency_ms" in r:
            print(f"  Fmax {r['fmax_mhz']} MHz -> {r['latency_ms']} ms/inference, "
                  f"{r['throughput_inf_per_s']} inferences/s ({LABEL})")
        elif r["status"]:
            print(f"  bitstream {r['status']}: no Fmax, no time estimate")


if __name__ == "__main__":
    main()
