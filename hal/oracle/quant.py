"""QuantizeLinear / DequantizeLinear (opset 21): per-tensor, per-axis and blocked, integer types.

Rounding is ONNX's (round half to even, ``np.rint``) and results saturate to the integer
type's range. The quotient ``x / scale`` is computed in ``x``'s dtype, as ONNX and ONNX
Runtime do, so a half-way case rounds the same way everywhere.
"""

from __future__ import annotations

import numpy as np
from hal.oracle import op

#: integer types the reference quantizes to / dequantizes from (float8 and 4-bit are declined)
QUANT_DTYPES = {np.dtype(t): (np.iinfo(t).min, np.iinfo(t).max)
                for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32)}
_ONNX_DTYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32}


def _broadcast(v: np.ndarray, shape: tuple, axis: int, block_size: int) -> np.ndarray:
    """``v`` (a scale or zero point) shaped to broadcast against a tensor of ``shape``."""
    if v.ndim == 0 or v.size == 1:
        return v.reshape(())
    axis = axis % len(shape)
    if not block_size:
        if v.ndim != 1 or v.size != shape[axis]:
            raise ValueError(f"per-axis scale/zero point of shape {list(v.shape)} does not match "
                             f"axis {axis} of an input of shape {list(shape)}")
        dims = [1] * len(shape)
        dims[axis] = v.size
        return v.reshape(dims)
    v = np.repeat(v, block_size, axis=axis).take(range(shape[axis]), axis=axis)
    if v.shape != tuple(shape):
        raise ValueError(f"blocked scale of shape {list(v.shape)} does not fit input "
                         f"{list(shape)} with block_size {block_size}")
    return v


@op("QuantizeLinear")
def quantize_linear(x, y_scale, y_zero_point=None, axis=1, block_size=0, saturate=1,
                    output_dtype=0):
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    else:
        dtype = np.dtype(_ONNX_DTYPES.get(output_dtype, np.uint8)) if output_dtype else \
            np.dtype(np.uint8)
    if output_dtype and output_dtype not in _ONNX_DTYPES:
        raise ValueError(f"QuantizeLinear output_dtype {output_dtype} is not an integer type "
                         f"the reference runs")
    lo, hi = QUANT_DTYPES[np.dtype(dtype)]
    # add the zero point and clip in float64: exact for every integer type here, and casting
    # an out-of-range float to an int is undefined in numpy
    q = np.rint(x / _broadcast(y_scale, x.shape, axis, block_size)).astype(np.float64)
    if y_zero_point is not None:
        q = q + _broadcast(y_zero_point, x.shape, axis, block_size)
    return np.clip(q, lo, hi).astype(dtype)


@op("DequantizeLinear")
def dequantize_linear(x, x_scale, x_zero_point=None, axis=1, block_size=0):
    dx = x.astype(np.float32)
    if x_zero_point is not None:
        dx = dx - _broadcast(x_zero_point, x.shape, axis, block_size).astype(np.float32)
    y = dx * _broadcast(x_scale, x.shape, axis, block_size)
    return y.astype(x_scale.dtype, copy=False)
