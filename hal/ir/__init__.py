"""HAL's IR: ONNX operator semantics held in memory with onnx_ir."""

from hal.ir.model import DEFAULT_OPSET, MIN_OPSET, Model, TensorSpec, from_proto, load, save

__all__ = ["DEFAULT_OPSET", "MIN_OPSET", "Model", "TensorSpec", "from_proto", "load", "save"]
