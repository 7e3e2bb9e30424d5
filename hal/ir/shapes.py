"""Static shapes and dtypes of every value, from ONNX shape inference (non-strict).

Dims are ints when known, strings for symbolic dims (the batch), None when unknown.
HAL's own validator then checks what ONNX inference lets through.
"""

from __future__ import annotations

import numpy as np
import onnx

Shape = tuple  # of int | str | None


def _shape_of(type_proto: onnx.TypeProto) -> tuple[Shape | None, np.dtype | None]:
    if not type_proto.HasField("tensor_type"):
        return None, None
    tt = type_proto.tensor_type
    dtype = _np_dtype(tt.elem_type)
    if not tt.HasField("shape"):
        return None, dtype
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims), dtype


def _np_dtype(elem_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type; None for none (0, unknown, string)."""
    if not elem_type:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001 - a corrupt model names a type onnx does not know
        return None


def infer(proto: onnx.ModelProto) -> dict[str, tuple[Shape | None, np.dtype | None]]:
    """Map every value name to (shape, dtype) as far as ONNX inference gets."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        inferred = proto
    g = inferred.graph
    out: dict[str, tuple[Shape | None, np.dtype | None]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shape, dtype = _shape_of(vi.type)
        if vi.name not in out or out[vi.name][0] is None:
            out[vi.name] = (shape, dtype)
    for init in g.initializer:
        out[init.name] = (tuple(init.dims), _np_dtype(init.data_type))
    return out


def fmt(shape: Shape | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def static(shape: Shape | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)
