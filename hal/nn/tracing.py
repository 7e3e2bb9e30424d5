"""Symbolic tensors and the builder that records hal.nn calls as IR nodes."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Sequence

import numpy as np
import onnx_ir as ir

from hal.errors import ModelError
from hal.ir.model import DEFAULT_OPSET, IR_VERSION, Model

_state = threading.local()


class Builder:
    """Collects nodes and initializers while a model is being traced."""

    def __init__(self) -> None:
        self.nodes: list[ir.Node] = []
        self.initializers: dict[str, ir.Value] = {}
        self.scope: list[str] = []
        self.counts: dict[str, int] = {}

    def unique(self, base: str) -> str:
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def prefix(self) -> str:
        return ".".join(s for s in self.scope if s)

    def node_name(self, op: str) -> str:
        p = self.prefix()
        return self.unique(f"{p}/{op}" if p else op)

    def constant(self, array: np.ndarray, name: str | None = None) -> ir.Value:
        """An initializer; parameters are named by their module path."""
        arr = np.asarray(array, order="C")  # ascontiguousarray would make a scalar 1-D
        name = self.unique(name or (self.prefix() + ".const" if self.prefix() else "const"))
        v = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
                     const_value=ir.tensor(arr, name=name))
        self.initializers[name] = v
        return v

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], rank: int | None,
           n_out: int = 1, **attrs) -> list[Tensor]:
        name = self.node_name(op_type)
        attributes = [ir.convenience.convert_attribute(k, v) for k, v in attrs.items() if v is not None]
        node = ir.Node("", op_type, inputs=list(inputs), attributes=attributes, name=name,
                       num_outputs=n_out)
        for i, out in enumerate(node.outputs):
            out.name = self.unique(name.replace("/", ".") + (f":{i}" if n_out > 1 else ""))
        self.nodes.append(node)
        return [Tensor(o, rank) for o in node.outputs]


def current() -> Builder:
    b = getattr(_state, "builder", None)
    if b is None:
        raise ModelError("hal.nn layers build a graph only while tracing: call "
                         "module.to_model(input_shape) or hal.nn.trace(fn, shapes)")
    return b


@contextlib.contextmanager
def scope(name: str):
    b = current()
    b.scope.append(name)
    try:
        yield
    finally:
        b.scope.pop()


class Tensor:
    """A value in a graph being traced; supports + - * / @ like an array."""

    def __init__(self, value: ir.Value, rank: int | None):
        self.value = value
        self.rank = rank

    @property
    def name(self) -> str:
        return self.value.name

    def _bin(self, op: str, other, swap: bool = False) -> Tensor:
        o = as_tensor(other)
        a, b = (o, self) if swap else (self, o)
        rank = max(r for r in (a.rank, b.rank) if r is not None) if (a.rank or b.rank) else None
        return current().op(op, [a.value, b.value], rank)[0]

    def __add__(self, o): return self._bin("Add", o)
    def __radd__(self, o): return self._bin("Add", o, swap=True)
    def __sub__(self, o): return self._bin("Sub", o)
    def __rsub__(self, o): return self._bin("Sub", o, swap=True)
    def __mul__(self, o): return self._bin("Mul", o)
    def __rmul__(self, o): return self._bin("Mul", o, swap=True)
    def __truediv__(self, o): return self._bin("Div", o)
    def __matmul__(self, o): return self._bin("MatMul", o)

    def reshape(self, *shape: int) -> Tensor:
        from hal.nn import functional as F
        return F.reshape(self, shape)

    def transpose(self, *perm: int) -> Tensor:
        from hal.nn import functional as F
        return F.transpose(self, perm)

    def __repr__(self) -> str:
        return f"<hal.nn.Tensor {self.name} rank={self.rank}>"


def as_tensor(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x, dtype=np.float32) if not isinstance(x, np.ndarray) else x
    return Tensor(current().constant(arr), arr.ndim)


def _dims(shape: Sequence[int | str | None]) -> list[int | str]:
    out: list[int | str] = []
    for i, d in enumerate(shape):
        if d is None:
            out.append("N" if i == 0 else f"d{i}")
        elif isinstance(d, (int, np.integer)) and d > 0 or isinstance(d, str):
            out.append(d if isinstance(d, str) else int(d))
        else:
            raise ModelError(f"input shape {tuple(shape)}: dim {i} must be a positive int, a name, "
                             f"or None for a dynamic (batch) dim; got {d!r}")
    return out


def trace(fn: Callable[..., Tensor | Sequence[Tensor]], *input_shapes: Sequence[int | str | None],
          input_names: Sequence[str] | None = None, dtype=np.float32, name: str = "model") -> Model:
    """Record ``fn`` (a hal.nn.Module or a function of Tensors) as a hal.Model.

    ``None`` in a shape is a dynamic dim (the batch): ``trace(net, (None, 1, 28, 28))``.
    """
    if not input_shapes:
        raise ModelError("trace needs the shape of every input, e.g. (None, 1, 28, 28)")
    if isinstance(input_shapes[0], (int, type(None), str)):
        input_shapes = (tuple(input_shapes),)  # trace(fn, None, 784) as a single shape
    names = list(input_names or (["input"] if len(input_shapes) == 1
                                 else [f"input{i}" for i in range(len(input_shapes))]))
    if len(names) != len(input_shapes):
        raise ModelError(f"{len(input_shapes)} input shapes but {len(names)} input names")
    builder = Builder()
    ir_dtype = ir.DataType.from_numpy(np.dtype(dtype))
    inputs = [ir.Value(name=n, shape=ir.Shape(_dims(s)), type=ir.TensorType(ir_dtype))
              for n, s in zip(names, input_shapes)]
    prev = getattr(_state, "builder", None)
    _state.builder = builder
    try:
        result = fn(*[Tensor(v, len(v.shape)) for v in inputs])
    finally:
        _state.builder = prev
    outs = [result] if isinstance(result, Tensor) else list(result)
    if not outs or not all(isinstance(o, Tensor) for o in outs):
        raise ModelError("the traced function must return a hal.nn Tensor or a sequence of them")
    out_values = []
    for i, o in enumerate(outs):
        v = o.value
        if v in inputs or v.name in builder.initializers:
            v = builder.op("Identity", [v], o.rank)[0].value
        v.name = "output" if len(outs) == 1 else f"output{i}"
        out_values.append(v)
    graph = ir.Graph(inputs, out_values, nodes=builder.nodes,
                     initializers=list(builder.initializers.values()),
                     opset_imports={"": DEFAULT_OPSET}, name=name)
    return Model(ir.Model(graph, ir_version=IR_VERSION, producer_name="hal.nn"), name)
