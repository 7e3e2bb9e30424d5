"""HAL's numpy oracle: ``OPS[op_type](*inputs, **attributes) -> array | tuple``.

Inputs are numpy arrays (None for an omitted optional input); attributes are
plain Python values. Each kernel implements ONNX semantics at HAL's opset, correct
first and fast second. The core owns them: constant folding and calibration compute
with them, ``cpu@reference`` runs them (``hal.oracle.interpreter``), and every other
device is checked against them.
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


from hal.oracle import elementwise, fused, integer, loss, nn, quant, tensor  # noqa: E402,F401
