"""Shape and data-movement ops."""

from __future__ import annotations

import numpy as np

from hal.oracle import op


@op("Reshape")
def reshape(x, shape, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("Flatten")
def flatten(x, axis=1):
    axis = axis % x.ndim if x.ndim else 0
    lead = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(lead, -1) if x.size else x.reshape(lead, int(np.prod(x.shape[axis:])))


@op("Transpose")
def transpose(x, perm=None):
    return np.transpose(x, perm)


@op("Concat")
def concat(*xs, axis=0):
    return np.concatenate(xs, axis=axis)


@op("Shape")
def shape(x, start=0, end=None):
    return np.array(x.shape[start:end], dtype=np.int64)  # slicing clips start/end as ONNX does


@op("Unsqueeze")
def unsqueeze(x, axes):
    rank = x.ndim + len(axes)
    at = sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))
    if len(set(at)) != len(at):
        raise ValueError(f"Unsqueeze axes {list(axes)} name the same output axis twice")
    return np.expand_dims(x, tuple(at))


@op("Constant")
def constant(value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             value_string=None, value_strings=None):
    if value is not None:
        return value
    if value_float is not None:
        return np.array(value_float, np.float32)
    if value_floats is not None:
        return np.array(value_floats, np.float32)
    if value_int is not None:
        return np.array(value_int, np.int64)
    if value_ints is not None:
        return np.array(value_ints, np.int64)
    if value_string is not None:
        return np.array(value_string, object)
    if value_strings is not None:
        return np.array(value_strings, object)
    raise ValueError("Constant has no value attribute (value, value_float(s), value_int(s) or "
                     "value_string(s))")


@op("ConstantOfShape")
def constant_of_shape(shape, value=None):
    fill = np.zeros(1, np.float32) if value is None else value
    return np.full([int(d) for d in shape], fill.reshape(()), dtype=fill.dtype)


#: the ONNX types Cast converts between here (numpy's own numeric types), by TensorProto number
CAST_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
               7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32,
               13: np.uint64}


@op("Cast")
def cast(x, to, saturate=1):
    # numpy's conversions are ONNX's for these types: round to nearest even between floats,
    # truncation toward zero from float to int, nonzero -> True
    if to not in CAST_DTYPES:
        raise ValueError(f"Cast to ONNX type {to} is not one the reference runs (numeric types "
                         f"{sorted(CAST_DTYPES)})")
    return np.asarray(x).astype(CAST_DTYPES[to])
