"""Golden vectors of hal_int8: small layers computed by the numpy specification.

Every case is drawn from its own fixed seed (``numpy.random.default_rng(seed)``) or built by
hand, evaluated with ``hal.backends.fpga.spec`` and written to ``<name>.npz``. The arrays are
named after the kernel arguments (registers) they go to:

    x, w, bias, mult, shift   the input buffers (int8, int8, int32, int32, int32)
    op n c h wd o kh kw stride pad groups act_min act_max pool   the scalar registers (int32)
    y                         the expected output buffer (int8)
    acc                       the int32 accumulators before requantization (for debugging)
    seed, description         how the case was made

Usage (from the repository, with HAL installed; ``make golden`` in the folder does this):

    python bitstreams/hal_int8/golden/make_golden.py           write the files, update manifest
    python bitstreams/hal_int8/golden/make_golden.py --check   exit 1 if a file differs

np.savez writes no timestamps, so the same spec gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from hal.backends.fpga import manifest as manifest_mod
from hal.backends.fpga import spec

HERE = Path(__file__).resolve().parent
SCALARS = ("op", "n", "c", "h", "wd", "o", "kh", "kw", "stride", "pad", "groups", "act_min",
           "act_max", "pool")


def _multipliers(rng, w, spread=(0.5, 2.0), target=40.0):
    """Per-channel (m, s) that map a typical accumulator of this layer to about ``target``."""
    k = w[0].size
    typical = 128 * 128 / 3 * np.sqrt(k)  # std of a sum of k uniform int8 products
    ms = [spec.quantize_multiplier(float(rng.uniform(*spread)) * target / typical)
          for _ in range(w.shape[0])]
    return np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32)


def _conv(seed, n, c, h, wd, o, k, stride=1, pad=0, groups=1, act=(-128, 127), pool=0, kw=None,
          description=""):
    rng = np.random.default_rng(seed)
    kw = k if kw is None else kw
    x = rng.integers(-128, 128, (n, c, h, wd), dtype=np.int8)
    w = rng.integers(-128, 128, (o, c // groups, k, kw), dtype=np.int8)
    bias = rng.integers(-20000, 20000, o, dtype=np.int32)
    mult, shift = _multipliers(rng, w)
    return _case(seed, description, x, w, bias, mult, shift, op=0, stride=stride, pad=pad,
                 groups=groups, act=act, pool=pool)


def _case(seed, description, x, w, bias, mult, shift, op, stride=1, pad=0, groups=1,
          act=(-128, 127), pool=0):
    if op == 0:
        acc = spec.conv2d_acc(x, w, bias, stride, pad, groups)
        y = spec.conv2d(x, w, bias, mult, shift, stride, pad, groups, act[0], act[1], pool)
        (n, c, h, wd), (o, _, kh, kw) = x.shape, w.shape
    else:
        acc = spec.gemm_acc(x, w, bias)
        y = spec.gemm(x, w, bias, mult, shift, act[0], act[1])
        (n, c), (o, _) = x.shape, w.shape
        h = wd = kh = kw = stride = groups = 1
        pad = pool = 0
    regs = (op, n, c, h, wd, o, kh, kw, stride, pad, groups, act[0], act[1], pool)
    out = {"x": x, "w": w, "bias": bias, "mult": mult, "shift": shift, "y": y, "acc": acc,
           "seed": np.int64(seed), "description": np.str_(description)}
    out.update({k: np.int32(v) for k, v in zip(SCALARS, regs, strict=True)})
    return out


def _gemm(seed, n, k, o, act=(-128, 127), description=""):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (n, k), dtype=np.int8)
    w = rng.integers(-128, 128, (o, k), dtype=np.int8)
    bias = rng.integers(-20000, 20000, o, dtype=np.int32)
    mult, shift = _multipliers(rng, w)
    return _case(seed, description, x, w, bias, mult, shift, op=1, act=act)


def _relu6():
    case = _conv(5, 1, 4, 6, 6, 8, 3, pad=1, description="")
    s_y = 6 / 50  # output scale: ReLU6 clamps at round(6 / s_y) = 50
    act = (0, round(6 / s_y))
    return _case(5, "3x3 conv, pad 1, ReLU6 (act_min 0, act_max round(6/s_y) = 50)",
                 case["x"], case["w"], case["bias"], case["mult"], case["shift"], op=0, pad=1,
                 act=act)


def _saturation():
    """Accumulators far outside int8 both ways and at the int32 limits."""
    x = np.array([[127, 127, 127, 127], [-128, -128, -128, -128], [1, -1, 2, -2],
                  [127, -128, 127, -128]], np.int8)
    w = np.array([[127, 127, 127, 127], [-128, 127, -128, 127], [1, 1, 1, 1], [0, 0, 0, 0],
                  [127, 127, 127, 127]], np.int8)
    # lane 3: acc = -2**31 exactly; lane 4: bias + sum passes 2**31 - 1 and wraps (int32)
    bias = np.array([0, 0, 200, -2**31, 2**31 - 1001], np.int32)
    mult = np.array([2**30, 2**31 - 1, 2**30, 2**30, 1], np.int32)
    shift = np.array([31, 31, 24, 31, 1], np.int32)  # x1/2, x(1 - 2**-31), x64, x1/2, x1/2
    return _case(0, "saturation: |acc| far beyond int8 (clamps to -128/127), acc = -2**31, "
                 "bias + sum wrapping modulo 2**32", x, w, bias, mult, shift, op=1)


def _rounding_ties():
    """acc * m / 2**s exactly at .5 for positive and negative acc: round half up."""
    acc = np.array([1, 3, 5, -1, -3, -5, 7, -7, 0, 2, -2, 8, -8, -16, 127, -128], np.int32)
    x = acc.reshape(-1, 1).astype(np.int8)  # K = 1, w = 1: acc = x + bias
    w = np.ones((4, 1), np.int8)
    bias = np.array([0, 0, 4, -4], np.int32)
    # x1/2 (odd acc ties), x1/2 via m=2**30 s=31, x3/8 (acc+bias = 4 mod 8 ties),
    # x1/4 with a shift only (acc+bias = 2 mod 4 ties)
    mult = np.array([1, 2**30, 3, 1], np.int32)
    shift = np.array([1, 31, 3, 2], np.int32)
    return _case(0, "rounding ties: acc*m + 2**(s-1) with acc*m exactly at .5 (ties go up, "
                 "also for negative acc)", x, w, bias, mult, shift, op=1)


def _shift_only():
    rng = np.random.default_rng(9)
    x = rng.integers(-128, 128, (2, 3, 5, 5), dtype=np.int8)
    w = rng.integers(-128, 128, (5, 3, 3, 3), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 5, dtype=np.int32)
    mult = np.ones(5, np.int32)
    shift = np.array([10, 11, 12, 13, 14], np.int32)  # power-of-two scales: m = 1
    return _case(9, "power-of-two scales (m = 1, shift only), batch 2", x, w, bias, mult, shift,
                 op=0, pad=1)


CASES = {
    "conv3x3_pad1": lambda: _conv(1, 1, 3, 8, 8, 8, 3, pad=1,
                                  description="3x3 conv, stride 1, pad 1"),
    "conv3x3_stride2": lambda: _conv(2, 2, 4, 9, 9, 6, 3, stride=2, pad=1,
                                     description="3x3 conv, stride 2, pad 1, batch 2, odd size"),
    "conv_rect_kernel": lambda: _conv(3, 1, 2, 6, 7, 4, 3, kw=1, stride=2,
                                      description="3x1 kernel, stride 2, no padding"),
    "depthwise3x3": lambda: _conv(4, 1, 8, 7, 7, 8, 3, pad=1, groups=8,
                                  description="depthwise 3x3 (groups = C = O), pad 1"),
    "depthwise_mult2_stride2": lambda: _conv(6, 1, 4, 8, 8, 8, 3, stride=2, pad=1, groups=4,
                                             description="depthwise, multiplier 2, stride 2"),
    "grouped_multitile": lambda: _conv(7, 1, 24, 5, 5, 36, 3, pad=1, groups=3,
                                       description="groups 3, 36 outputs (3 PE tiles, tiles "
                                       "straddle groups), 8 inputs per group"),
    "wide_channels": lambda: _conv(8, 1, 40, 4, 4, 20, 1,
                                   description="1x1 conv, 40 input channels (3 PE_IN chunks)"),
    "relu6": _relu6,
    "conv_relu_pool2": lambda: _conv(10, 1, 3, 8, 8, 6, 3, pad=1, act=(0, 127), pool=2,
                                     description="3x3 conv, pad 1, ReLU, 2x2 max-pool"),
    "pool3_floor": lambda: _conv(11, 1, 2, 9, 9, 4, 3, pool=3,
                                 description="3x3 conv (7x7 out), 3x3 pool: partial window "
                                 "dropped (2x2 out)"),
    "gemm": lambda: _gemm(12, 3, 50, 20, description="fully connected, N=3 K=50 O=20"),
    "gemm_relu": lambda: _gemm(13, 2, 17, 5, act=(0, 127), description="fully connected, ReLU"),
    "saturation": _saturation,
    "rounding_ties": _rounding_ties,
    "shift_only": _shift_only,
}


def build(name: str) -> dict[str, np.ndarray]:
    return CASES[name]()


def encode(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def entry(name: str, arrays: dict, data: bytes) -> dict:
    return {"path": f"golden/{name}.npz", "sha256": hashlib.sha256(data).hexdigest(),
            "op": "conv" if int(arrays["op"]) == 0 else "gemm", "seed": int(arrays["seed"]),
            "x": list(arrays["x"].shape), "w": list(arrays["w"].shape),
            "y": list(arrays["y"].shape), "description": str(arrays["description"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files, write nothing")
    a = ap.parse_args(argv)
    entries, stale = [], []
    for name in CASES:
        arrays = build(name)
        data = encode(arrays)
        path = HERE / f"{name}.npz"
        entries.append(entry(name, arrays, data))
        if not path.is_file() or path.read_bytes() != data:
            stale.append(path.name)
            if not a.check:
                path.write_bytes(data)
    mpath = HERE.parent / "manifest.json"
    manifest = manifest_mod.load(mpath)
    if manifest["golden"]["files"] != entries:
        stale.append("manifest.json golden.files")
        if not a.check:
            manifest["golden"]["files"] = entries
            manifest_mod.write(manifest, mpath)
    if a.check:
        print("up to date" if not stale else f"differs from the spec: {', '.join(stale)}")
        return 1 if stale else 0
    print(f"wrote {len(entries)} cases; changed: {', '.join(stale) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
