"""Functional hal.nn: each call records one or a few IR nodes while tracing.

Weights are numpy arrays; they become initializers named by the module path.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hal.nn.tracing import Tensor, as_tensor, current


def _pair(v, n=2) -> list[int]:
    return [int(v)] * n if isinstance(v, (int, np.integer)) else [int(x) for x in v]


def _param(arr: np.ndarray | Tensor | None, name: str):
    if arr is None:
        return None
    if isinstance(arr, Tensor):
        return arr.value
    b = current()
    p = b.prefix()
    return b.constant(np.asarray(arr, dtype=np.float32), f"{p}.{name}" if p else name)


def _unary(op: str, x: Tensor, **attrs) -> Tensor:
    return current().op(op, [as_tensor(x).value], x.rank, **attrs)[0]


def relu(x: Tensor) -> Tensor: return _unary("Relu", x)
def sigmoid(x: Tensor) -> Tensor: return _unary("Sigmoid", x)
def tanh(x: Tensor) -> Tensor: return _unary("Tanh", x)
def gelu(x: Tensor) -> Tensor: return _unary("Gelu", x)
def identity(x: Tensor) -> Tensor: return x
def softmax(x: Tensor, axis: int = -1) -> Tensor: return _unary("Softmax", x, axis=axis)
def log_softmax(x: Tensor, axis: int = -1) -> Tensor: return _unary("LogSoftmax", x, axis=axis)


def dropout(x: Tensor, p: float = 0.5) -> Tensor:
    """A Dropout node with ratio ``p``: the identity at inference (every flow removes it), a
    random mask when ``hal.train`` runs the model in training mode."""
    if not 0.0 <= p < 1.0:
        from hal.errors import ModelError

        raise ModelError(f"dropout probability must be in [0, 1), got {p!r}")
    b = current()
    ratio = b.constant(np.array(p, np.float32), "dropout_ratio")
    return b.op("Dropout", [x.value, ratio], x.rank)[0]


def clip(x: Tensor, lo: float, hi: float) -> Tensor:
    b = current()
    lo_v = b.constant(np.array(lo, np.float32), "clip_min")
    hi_v = b.constant(np.array(hi, np.float32), "clip_max")
    return b.op("Clip", [x.value, lo_v, hi_v], x.rank)[0]


def relu6(x: Tensor) -> Tensor:
    return clip(x, 0.0, 6.0)


def conv2d(x: Tensor, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    w = np.asarray(weight) if not isinstance(weight, Tensor) else None
    k = list(w.shape[2:]) if w is not None else None
    p = _pair(padding)
    inputs = [x.value, _param(weight, "weight")]
    if bias is not None:
        inputs.append(_param(bias, "bias"))
    return current().op("Conv", inputs, 4, kernel_shape=k, strides=_pair(stride),
                        pads=p + p, dilations=_pair(dilation), group=int(groups))[0]


def linear(x: Tensor, weight, bias=None) -> Tensor:
    """y = x @ weight.T + bias; a Gemm for 2-D inputs, MatMul (+Add) otherwise."""
    b = current()
    if x.rank == 2:
        inputs = [x.value, _param(weight, "weight")]
        if bias is not None:
            inputs.append(_param(bias, "bias"))
        return b.op("Gemm", inputs, 2, transB=1)[0]
    wt = np.asarray(weight, np.float32).T
    y = b.op("MatMul", [x.value, _param(np.ascontiguousarray(wt), "weight_t")], x.rank)[0]
    if bias is not None:
        y = b.op("Add", [y.value, _param(bias, "bias")], x.rank)[0]
    return y


def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    k, p = _pair(kernel_size), _pair(padding)
    return current().op("MaxPool", [x.value], 4, kernel_shape=k,
                        strides=_pair(stride if stride is not None else kernel_size), pads=p + p)[0]


def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    k, p = _pair(kernel_size), _pair(padding)
    return current().op("AveragePool", [x.value], 4, kernel_shape=k,
                        strides=_pair(stride if stride is not None else kernel_size), pads=p + p,
                        count_include_pad=0)[0]


def global_avg_pool(x: Tensor) -> Tensor:
    return _unary("GlobalAveragePool", x)


def flatten(x: Tensor, axis: int = 1) -> Tensor:
    return current().op("Flatten", [x.value], 2, axis=axis)[0]


def batch_norm(x: Tensor, weight, bias, running_mean, running_var, eps: float = 1e-5) -> Tensor:
    ins = [x.value, _param(weight, "weight"), _param(bias, "bias"),
           _param(running_mean, "running_mean"), _param(running_var, "running_var")]
    return current().op("BatchNormalization", ins, x.rank, epsilon=float(eps))[0]


def layer_norm(x: Tensor, weight, bias, eps: float = 1e-5) -> Tensor:
    ins = [x.value, _param(weight, "weight"), _param(bias, "bias")]
    return current().op("LayerNormalization", ins, x.rank, axis=-1, epsilon=float(eps))[0]


def reshape(x: Tensor, shape: Sequence[int]) -> Tensor:
    """ONNX Reshape: 0 copies the input dim, -1 is inferred."""
    shp = current().constant(np.array(list(shape), np.int64), "shape")
    return current().op("Reshape", [x.value, shp], len(shape))[0]


def transpose(x: Tensor, perm: Sequence[int]) -> Tensor:
    return current().op("Transpose", [x.value], len(perm), perm=[int(p) for p in perm])[0]


def matmul(a: Tensor, b) -> Tensor:
    return a @ b


def add(a: Tensor, b) -> Tensor:
    return a + b


def concat(xs: Sequence[Tensor], axis: int = 1) -> Tensor:
    xs = [as_tensor(x) for x in xs]
    return current().op("Concat", [x.value for x in xs], xs[0].rank, axis=axis)[0]


def mean(x: Tensor, axes: Sequence[int], keepdims: bool = False) -> Tensor:
    ax = current().constant(np.array(list(axes), np.int64), "axes")
    rank = None if x.rank is None else (x.rank if keepdims else x.rank - len(axes))
    return current().op("ReduceMean", [x.value, ax], rank, keepdims=int(keepdims))[0]
