"""torch.nn.Module -> hal.Model, through torch's ONNX exporter."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from hal.errors import HalError, ModelError
from hal.ir.model import DEFAULT_OPSET, Model, load

# torch's TorchScript exporter stops at opset 20; hal.load converts the file to DEFAULT_OPSET.
_EXPORT_OPSET = min(DEFAULT_OPSET, 20)


def from_torch(module: Any, example_input: Any, dynamic_batch: bool = True,
               name: str | None = None) -> Model:
    """Export ``module`` (in eval mode) at HAL's opset and load it; the batch dim stays dynamic."""
    try:
        import torch
    except ImportError:
        raise HalError("hal.from_torch needs PyTorch: pip install hal-accel[torch]") from None
    examples = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    examples = tuple(torch.as_tensor(np.asarray(e)) if not isinstance(e, torch.Tensor) else e
                     for e in examples)
    names = ["input"] if len(examples) == 1 else [f"input{i}" for i in range(len(examples))]
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        torch.onnx.export(module, examples, buf, input_names=names, opset_version=_EXPORT_OPSET,
                          dynamic_axes={n: {0: "N"} for n in names} if dynamic_batch else None,
                          dynamo=False)
    except Exception as exc:
        raise ModelError(f"torch could not export {type(module).__name__} to ONNX: "
                         f"{type(exc).__name__}: {str(exc)[:400]}") from None
    finally:
        module.train(was_training)
    return load(buf.getvalue(), name=name or type(module).__name__.lower())
