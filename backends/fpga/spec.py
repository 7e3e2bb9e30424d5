"""The int8 arithmetic of HAL's FPGA accelerator: the definition every path matches.

Every FPGA path — the emulator, the HLS C++ kernel compiled for simulation, the
OpenCL kernel, the RTL, a board — must produce exactly these integers.

Data
    activations  int8, symmetric (zero point 0), one scale per tensor
    weights      int8, symmetric, one scale per output channel
    bias         int32, scale = activation scale × weight scale of its channel

One layer (conv or gemm)
    1. acc[c] = bias[c] + Σ x[k] · w[c, k]          int8 × int8 products, int32 sums.
       Padding contributes zeros. The driver refuses layers with more than
       MAX_K = 2**17 - 1 products per output, so the int32 sum cannot overflow
       (|x·w| ≤ 2**14; 2**17 · 2**14 = 2**31).
    2. y = (acc · m[c] + 2**(s[c] - 1)) >> s[c]      64-bit product, arithmetic shift:
       rounding is round-half-up (ties go towards +infinity), s[c] in 1..62,
       m[c] in 0..2**31 - 1. With power-of-two scales m[c] = 1 (shift only).
    3. y = clamp(y, act_min, act_max)                saturation to int8 [-128, 127];
       ReLU is act_min = 0, ReLU6 is act_max = round(6 / output scale).
    4. optional max-pool over k×k windows with stride k (on int8, after step 3).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

INT8_MIN, INT8_MAX = -128, 127
MAX_K = 2 ** 17 - 1
MAX_SHIFT = 62


def quantize_multiplier(real: float, power_of_two: bool = False) -> tuple[int, int]:
    """(m, s) with m · 2**-s ≈ ``real`` (> 0): 31-bit m for the most precision, or m = 1."""
    if not real > 0 or not math.isfinite(real):
        raise ValueError(f"requantization multiplier must be positive and finite, got {real}")
    if power_of_two:
        s = int(round(-math.log2(real)))
        if not 1 <= s <= MAX_SHIFT:
            raise ValueError(f"multiplier {real} is not reachable by a shift in 1..{MAX_SHIFT}")
        return 1, s
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    m = int(round(mant * (1 << 31)))
    s = 31 - exp
    if m == 1 << 31:  # rounding reached 2**31: halve
        m, s = m >> 1, s - 1
    if s > MAX_SHIFT:  # too small: lose precision rather than overflow the shift
        m, s = m >> (s - MAX_SHIFT), MAX_SHIFT
    if s < 1:
        raise ValueError(f"multiplier {real} is too large for the accelerator (needs s >= 1)")
    return m, s


def requantize(acc: np.ndarray, m: np.ndarray, s: np.ndarray, act_min: int = INT8_MIN,
               act_max: int = INT8_MAX, channel_axis: int = 1) -> np.ndarray:
    """Steps 2 and 3: int32 accumulators -> int8 with per-channel (m, s)."""
    acc = np.asarray(acc)
    if acc.dtype != np.int32:
        raise TypeError(f"accumulators must be int32, got {acc.dtype}")
    shape = [1] * acc.ndim
    shape[channel_axis] = -1
    m64 = np.asarray(m, np.int64).reshape(shape)
    s64 = np.asarray(s, np.int64).reshape(shape)
    y = (acc.astype(np.int64) * m64 + (np.int64(1) << (s64 - 1))) >> s64
    lo, hi = max(act_min, INT8_MIN), min(act_max, INT8_MAX)
    return np.clip(y, lo, hi).astype(np.int8)


def max_pool(y: np.ndarray, k: int) -> np.ndarray:
    """Step 4: k×k max-pool with stride k on NCHW int8 (floor: partial windows dropped)."""
    n, c, h, w = y.shape
    ho, wo = h // k, w // k
    v = y[:, :, :ho * k, :wo * k].reshape(n, c, ho, k, wo, k)
    return v.max(axis=(3, 5))


def _check_k(k: int) -> None:
    if k > MAX_K:
        raise ValueError(f"{k} products per output exceed the accelerator's MAX_K={MAX_K}")


def conv2d_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0,
               groups: int = 1) -> np.ndarray:
    """Step 1 for a 2-D convolution: int8 NCHW input, int8 OIHW weight -> int32 NCHW."""
    if x.dtype != np.int8 or w.dtype != np.int8:
        raise TypeError(f"conv operands must be int8, got {x.dtype} and {w.dtype}")
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    _check_k(cg * kh * kw)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.int32)
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    og = o // groups
    outs = []
    for g in range(groups):
        wg = w[g * og:(g + 1) * og].astype(np.int32)
        xg = win[:, g * cg:(g + 1) * cg]
        outs.append(np.einsum("nchwij,ocij->nohw", xg, wg, dtype=np.int32))
    acc = np.concatenate(outs, axis=1) if groups > 1 else outs[0]
    return (acc + np.asarray(bias, np.int32).reshape(1, -1, 1, 1)).astype(np.int32)


def gemm_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Step 1 for a fully connected layer: int8 [N, K] · int8 [O, K]ᵀ -> int32 [N, O]."""
    if x.dtype != np.int8 or w.dtype != np.int8:
        raise TypeError(f"gemm operands must be int8, got {x.dtype} and {w.dtype}")
    _check_k(x.shape[1])
    acc = x.astype(np.int32) @ w.astype(np.int32).T
    return (acc + np.asarray(bias, np.int32)).astype(np.int32)


def conv2d(x, w, bias, m, s, stride=1, pad=0, groups=1, act_min=INT8_MIN, act_max=INT8_MAX,
           pool: int = 0) -> np.ndarray:
    """One accelerator conv layer: steps 1-4."""
    y = requantize(conv2d_acc(x, w, bias, stride, pad, groups), m, s, act_min, act_max)
    return max_pool(y, pool) if pool > 1 else y


def gemm(x, w, bias, m, s, act_min=INT8_MIN, act_max=INT8_MAX) -> np.ndarray:
    """One accelerator fully connected layer: steps 1-3."""
    return requantize(gemm_acc(x, w, bias), m, s, act_min, act_max)
