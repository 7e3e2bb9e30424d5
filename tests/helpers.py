"""Small builders for hand-made ONNX models used across tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, inits=(), opset=21, name="g") -> onnx.ModelProto:
    """inputs/outputs: (name, shape) pairs of float tensors; inits: name -> array."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    init = [numpy_helper.from_array(np.asarray(a), n) for n, a in dict(inits).items()]
    g = helper.make_graph(nodes, name, ins, outs, init)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def rand(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
