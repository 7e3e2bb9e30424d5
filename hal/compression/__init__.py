"""Model compression that pays on every device, done once on HAL's graph.

    small = hal.prune(model, ratio=0.5, structured=True)     # channels removed: smaller tensors
    sparse = hal.sparsify(model, sparsity=0.5)               # zeros (unstructured or 2:4)
    result = hal.distill(teacher, student, (x, y), device="cpu@jax", teacher_device="fpga@emu")
    result = hal.train(model, data, quantize="int8")         # quantization-aware training
    table = hal.compress(model, data, device="cpu", max_accuracy_drop=0.01)

Each function returns a new model and never modifies the one it is given.
"""

from __future__ import annotations

import importlib

#: public name -> the module defining it (imported on first use: pruning needs no framework);
#: no module is named as a function, or importing it would replace the function here
_WHERE = {
    "prune": "hal.compression.structured",
    "sparsify": "hal.compression.sparsity",
    "Sparsity": "hal.compression.sparsity",
    "distill": "hal.compression.distillation",
    "compress": "hal.compression.search",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'hal.compression' has no attribute {name!r}")


__all__ = sorted(_WHERE)
