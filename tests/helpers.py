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


def graph_model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    """A model of opset 21 (IR version 10) from value infos and initializer TensorProtos."""
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def usable(device: str) -> bool:
    """Whether ``device`` (a full string, e.g. "cpu:0@iree") is listed usable here."""
    import hal

    return any(d.string == device and d.usable for d in hal.devices())


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
