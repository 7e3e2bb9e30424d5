"""The reference kernels: ``OPS[op_type](*inputs, **attributes) -> array | tuple``.

Inputs are numpy arrays (None for an omitted optional input); attributes are
plain Python values. Each kernel implements ONNX semantics at HAL's opset.
"""

from __future__ import annotations

from typing import Callable

OPS: dict[str, Callable] = {}


def op(*names: str):
    def register(fn: Callable) -> Callable:
        for n in names:
            OPS[n] = fn
        return fn

    return register


from hal.backends.reference.ops import elementwise, fused, nn, quant, tensor  # noqa: E402,F401
