"""Integer ops of dynamic quantization: DynamicQuantizeLinear, MatMulInteger, ConvInteger.

Exact per the ONNX spec: products are summed in int64 and returned as int32 (the spec's
output type); DynamicQuantizeLinear rounds half to even and saturates to uint8. Where the
spec says nothing (an all-zero input makes its scale 0/255), the scale is 1.0 as ONNX
Runtime's kernel gives; every quantized value is then the zero point 0, so whatever reads
``(y - zero_point) * scale`` sees 0 either way.
"""

from __future__ import annotations

import numpy as np

from hal.oracle import op
from hal.oracle.nn import conv

_QMIN, _QMAX = 0, 255


@op("DynamicQuantizeLinear")
def dynamic_quantize_linear(x):
    x = np.asarray(x, np.float32)
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(_QMAX - _QMIN))
    zero_point = np.rint(np.clip(np.float32(_QMIN) - lo / scale, _QMIN, _QMAX))
    y = np.clip(np.rint(x / scale) + zero_point, _QMIN, _QMAX)
    return y.astype(np.uint8), np.array(scale, np.float32), np.array(zero_point, np.uint8)


def _centered(v: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """``v - zero_point`` in int64; a 1-D zero point runs along ``axis`` of ``v``."""
    out = v.astype(np.int64)
    if zero_point is None:
        return out
    zp = np.asarray(zero_point).astype(np.int64)
    if zp.size > 1:
        shape = [1] * out.ndim
        shape[axis] = zp.size
        zp = zp.reshape(shape)
    else:
        zp = zp.reshape(())
    return out - zp


@op("MatMulInteger")
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    # a's zero point is per row (the axis before the last), b's per column (the last axis)
    a64 = _centered(a, a_zero_point, -2 if a.ndim > 1 else 0)
    b64 = _centered(b, b_zero_point, -1)
    return np.matmul(a64, b64).astype(np.int32)


@op("ConvInteger")
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, auto_pad="NOTSET", dilations=None,
                 group=1, kernel_shape=None, pads=None, strides=None):
    # the zero point is subtracted before padding: padded positions contribute nothing
    x64 = _centered(x, x_zero_point, 1)
    w64 = _centered(w, w_zero_point, 0)
    return conv(x64, w64, None, auto_pad, dilations, group, kernel_shape, pads,
                strides).astype(np.int32)
