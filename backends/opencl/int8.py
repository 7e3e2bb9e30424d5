"""int8 kernels (``kernels/int8.cl``): int8 x int8 -> int32 GEMM and convolution with int32
bias, requantized by an integer multiplier and right shift, plus zero point and saturation.

These are the arithmetic an FPGA OpenCL platform runs; the rounding of the shift is the
build option ``HAL_REQUANT_ROUNDING`` (``rounding=`` here); the default, ``"half_up"``, is
the FPGA specification's (``hal.backends.fpga.spec``), which these kernels match bit for bit. Each call copies its operands to the device and the result
back: this is the kernel-level API, not a model path.
"""

from __future__ import annotations

import numpy as np

from hal.errors import InputError

ROUNDING = {"half_away_from_zero": "HAL_ROUND_HALF_AWAY_FROM_ZERO",
            "half_up": "HAL_ROUND_HALF_UP", "half_even": "HAL_ROUND_HALF_EVEN"}
I32, I64 = np.int32, np.int64


def _device(device):
    from hal.registry import device as resolve

    dev = resolve(device) if isinstance(device, str) else device
    if dev.backend.name != "opencl":
        raise InputError(f"{dev.string} is not an OpenCL device; use e.g. 'opencl:0'")
    return dev.backend.cl_device(dev.info)


def _program(cldev, rounding: str):
    from hal.backends.opencl import programs

    if rounding not in ROUNDING:
        raise InputError(f"rounding {rounding!r} is not one of {sorted(ROUNDING)}")
    return programs.build(cldev, "int8.cl", {"HAL_REQUANT_ROUNDING": ROUNDING[rounding]}).program


def _qparams(multiplier, shift, channels: int):
    m = np.asarray(multiplier, np.int64).reshape(-1)
    s = np.asarray(shift, np.int64).reshape(-1)
    if m.size != s.size or m.size not in (1, channels):
        raise InputError(f"multiplier and shift must be scalars or have {channels} entries "
                         f"(one per output channel), got {m.size} and {s.size}")
    if np.any(m < -2**31) or np.any(m >= 2**31) or np.any(s < 0) or np.any(s > 62):
        raise InputError("multiplier must fit in int32 and shift must be in 0..62")
    return m.astype(np.int32), s.astype(np.int32), int(m.size > 1)


def _check_int8(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != np.int8 or a.ndim != ndim:
        raise InputError(f"{name} must be an int8 numpy array of rank {ndim}, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} "
                         f"{getattr(a, 'shape', '')}")


def _run_gemm(cldev, prg, M, N, K, a_buf, a_off, sam, sak, sab, b_buf, sbk, sbn, sbb, batch, bias,
              bias_mode, ldc, scb, out_int32, m, s, qp_mode, zp, qmin, qmax):
    from hal.backends.opencl.runtime import allocate, cl, upload

    lib = cl()
    n_out = batch * scb if batch > 1 else M * ldc
    c32 = allocate(cldev, n_out * 4)
    c8 = allocate(cldev, n_out)
    bias_buf = upload(cldev, bias if bias is not None else np.zeros(1, np.int32))
    mb, sb = upload(cldev, m), upload(cldev, s)
    lib.Kernel(prg, "gemm_s8")(cldev.queue, (N, M, batch), None, I32(M), I32(N), I32(K), a_buf, I64(a_off),
                I32(sam), I32(sak), I64(sab), b_buf, I64(0), I32(sbk), I32(sbn), I64(sbb),
                bias_buf, I32(bias_mode), c32, c8, I32(ldc), I64(scb), I32(out_int32), mb, sb,
                I32(qp_mode), I32(zp), I32(qmin), I32(qmax))
    out = np.empty(n_out, np.int32 if out_int32 else np.int8)
    lib.enqueue_copy(cldev.queue, out, c32 if out_int32 else c8, is_blocking=True)
    return out


def gemm_int8(device, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None,
              multiplier=1, shift=0, zero_point: int = 0, qmin: int = -128, qmax: int = 127,
              rounding: str = "half_up", out: str = "int8") -> np.ndarray:
    """``requantize(a @ b + bias)`` on an OpenCL device; a [M, K] int8, b [K, N] int8,
    bias [N] int32; multiplier/shift per tensor or per column. ``out="int32"`` returns
    the accumulator (with bias) instead."""
    from hal.backends.opencl.runtime import upload

    _check_int8("a", a, 2)
    _check_int8("b", b, 2)
    M, K = a.shape
    if b.shape[0] != K:
        raise InputError(f"a is {list(a.shape)} and b is {list(b.shape)}: inner dims differ")
    N = b.shape[1]
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32 or bias.shape != (N,):
            raise InputError(f"bias must be int32 of shape [{N}], got {bias.dtype} {bias.shape}")
    m, s, per = _qparams(multiplier, shift, N)
    cldev = _device(device)
    prg = _program(cldev, rounding)
    res = _run_gemm(cldev, prg, M, N, K, upload(cldev, a), 0, K, 1, 0, upload(cldev, b), N, 1, 0, 1,
                    bias, 1 if bias is not None else 0, N, 0, out == "int32", m, s, per,
                    zero_point, qmin, qmax)
    return res.reshape(M, N)


def conv2d_int8(device, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None,
                multiplier=1, shift=0, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                input_zero_point: int = 0, zero_point: int = 0, qmin: int = -128,
                qmax: int = 127, rounding: str = "half_up",
                out: str = "int8") -> np.ndarray:
    """int8 NCHW convolution (group 1) as im2col + the int8 GEMM; weights [CO, C, KH, KW],
    multiplier/shift per tensor or per output channel. Padding reads ``input_zero_point``."""
    from hal.backends.opencl.runtime import allocate, cl, upload

    _check_int8("x", x, 4)
    _check_int8("w", w, 4)
    N, C, H, W = x.shape
    CO, Cw, KH, KW = w.shape
    if Cw != C:
        raise InputError(f"x has {C} channels but w expects {Cw}")
    sh, sw = strides
    pt, pl, pb, pr = pads
    dh, dw = dilations
    OH = (H + pt + pb - ((KH - 1) * dh + 1)) // sh + 1
    OW = (W + pl + pr - ((KW - 1) * dw + 1)) // sw + 1
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.int32 or bias.shape != (CO,):
            raise InputError(f"bias must be int32 of shape [{CO}], got {bias.dtype} {bias.shape}")
    m, s, per = _qparams(multiplier, shift, CO)
    cldev = _device(device)
    prg = _program(cldev, rounding)
    Kc, P = C * KH * KW, OH * OW
    col = allocate(cldev, N * Kc * P)
    cl().Kernel(prg, "im2col_s8")(cldev.queue, (P, Kc, N), None, I32(C), I32(H), I32(W), I32(KH), I32(KW),
                  I32(sh), I32(sw), I32(pt), I32(pl), I32(dh), I32(dw), I32(OH), I32(OW),
                  upload(cldev, x), I64(0), I64(C * H * W), col, I32(P), I64(Kc * P),
                  np.int8(input_zero_point))
    # C[co, p] = sum_k W[co, k] * col[k, p]: rows are output channels (qp/bias per row)
    res = _run_gemm(cldev, prg, CO, P, Kc, upload(cldev, w), 0, Kc, 1, 0, col, P, 1, Kc * P, N,
                    bias, 2 if bias is not None else 0, P, CO * P, out == "int32", m, s,
                    2 * per, zero_point, qmin, qmax)
    return res.reshape(N, CO, OH, OW)
