"""Small builders for hand-made ONNX models used across tests."""

from __future__ import annotations

import contextlib
import os

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


@contextlib.contextmanager
def env(**values):
    """Environment variables set for the block, restored (or removed) after it."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
