"""ir.Model -> torch.fx.GraphModule: one call_function per ONNX node, weights as buffers.

Converters live in ``ops_*.py`` and register with ``@converter("OpType")``. Each
gets a :class:`NodeView` and emits fx nodes through it. Inputs that are constants
(initializers, Constant nodes) are also available as numpy arrays at lowering
time, so shapes, axes and pads are resolved once instead of on every call.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx_ir as ir
import torch
from torch import fx

from hal.errors import BackendError
from hal.ir.attributes import attribute as attr

#: op type -> (converter, check); check(node) returns None or why the node cannot run.
CONVERTERS: dict[tuple[str, str], tuple[Callable, Callable | None]] = {}


def converter(*names: str, domain: str = "", check: Callable | None = None):
    def register(fn: Callable) -> Callable:
        for n in names:
            CONVERTERS[domain, n] = (fn, check)
        return fn

    return register


class NodeView:
    """What a converter sees of one ONNX node while it is lowered."""

    def __init__(self, lowering: Lowering, node: ir.Node):
        self.lowering = lowering
        self.node = node
        self.op = node.op_type
        self.n_in = len(node.inputs)
        self.n_out = len(node.outputs)

    def attr(self, name: str, default: Any = None) -> Any:
        return attr(self.node, name, default)

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is given."""
        return i < self.n_in and self.node.inputs[i] is not None

    def input(self, i: int) -> fx.Node | None:
        """Input ``i`` as a runtime value (constants become module buffers)."""
        if not self.has(i):
            return None
        return self.lowering.value(self.node.inputs[i])

    def inputs(self) -> list[fx.Node | None]:
        return [self.input(i) for i in range(self.n_in)]

    def const(self, i: int) -> np.ndarray | None:
        """Input ``i`` as a numpy array when it is known at compile time, else None."""
        if not self.has(i):
            return None
        return self.lowering.const(self.node.inputs[i])

    def ints(self, i: int) -> list[int] | fx.Node | None:
        """An integer-list input (shape, axes, pads...): a list when constant, else the fx node."""
        c = self.const(i)
        if c is not None:
            return [int(v) for v in np.asarray(c).reshape(-1)]
        return self.input(i)

    def scalar(self, i: int) -> float | int | fx.Node | None:
        c = self.const(i)
        if c is not None:
            return np.asarray(c).reshape(-1)[0].item() if np.asarray(c).size else None
        return self.input(i)

    def static_shape(self, i: int) -> tuple[int, ...] | None:
        """Input ``i``'s shape when the IR knows all of it, else None. Converters choose their
        kernel by it rather than by ``const`` so that a trainable weight stays a runtime value."""
        v = self.node.inputs[i] if self.has(i) else None
        if v is None:
            return None
        if v.const_value is not None:
            return tuple(v.const_value.shape)
        if v.shape is not None and all(isinstance(d, int) for d in v.shape):
            return tuple(v.shape)
        return None

    def wants(self, i: int) -> bool:
        """Whether output ``i`` exists and is used (optional outputs are often omitted)."""
        return i < self.n_out and bool(self.node.outputs[i].name)

    def in_dtype(self, i: int) -> torch.dtype | None:
        v = self.node.inputs[i] if self.has(i) else None
        return None if v is None or v.dtype is None else torch_dtype(v.dtype)

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> fx.Node:
        return self.lowering.graph.call_function(fn, args, kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> fx.Node:
        return self.lowering.graph.call_method(name, args, kwargs)


_DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.DOUBLE: torch.float64,
    ir.DataType.FLOAT16: torch.float16, ir.DataType.BFLOAT16: torch.bfloat16,
    ir.DataType.INT8: torch.int8, ir.DataType.INT16: torch.int16, ir.DataType.INT32: torch.int32,
    ir.DataType.INT64: torch.int64, ir.DataType.UINT8: torch.uint8,
    ir.DataType.UINT16: torch.uint16, ir.DataType.UINT32: torch.uint32,
    ir.DataType.UINT64: torch.uint64, ir.DataType.BOOL: torch.bool,
    ir.DataType.COMPLEX64: torch.complex64, ir.DataType.COMPLEX128: torch.complex128,
}


def torch_dtype(dtype: ir.DataType | int) -> torch.dtype:
    try:
        return _DTYPES[ir.DataType(dtype)]
    except (KeyError, ValueError):
        raise BackendError(f"torch has no dtype for ONNX {ir.DataType(dtype).name}") from None


def supported_dtype(dtype: ir.DataType | int | None) -> bool:
    return dtype is None or ir.DataType(dtype) in _DTYPES


class Lowering:
    """Builds one fx.Graph for one segment."""

    def __init__(self, model: ir.Model, device: torch.device, channels_last: bool = False,
                 cast_outputs: bool = False):
        self.model = model
        self.device = device
        self.channels_last = channels_last
        self.cast_outputs = cast_outputs
        self.graph = fx.Graph()
        self.root = torch.nn.Module()
        self.env: dict[str, fx.Node] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.buffers: dict[str, fx.Node] = {}
        g = model.graph
        for name, v in g.initializers.items():
            if v.const_value is not None:
                self.consts[name] = v.const_value.numpy()
        inputs = [v for v in g.inputs if v.name not in g.initializers]
        self.input_names = [v.name for v in inputs]
        for i, v in enumerate(inputs):
            x = self.graph.placeholder(f"x{i}")
            if channels_last and v.shape is not None and len(v.shape) == 4:
                x = self.graph.call_method("contiguous", (x,),
                                           {"memory_format": torch.channels_last})
            self.env[v.name] = x

    def const(self, v: ir.Value) -> np.ndarray | None:
        return self.consts.get(v.name)

    def value(self, v: ir.Value) -> fx.Node:
        if v.name in self.env:
            return self.env[v.name]
        if v.name in self.consts:
            return self.buffer(v.name, self.consts[v.name])
        raise BackendError(f"value {v.name!r} is used before it is produced")

    def buffer(self, name: str, array: np.ndarray) -> fx.Node:
        if name not in self.buffers:
            attr_name = f"c{len(self.buffers)}"
            t = torch.from_numpy(np.array(array, copy=True)).to(self.device)
            if self.channels_last and t.ndim == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            self.root.register_buffer(attr_name, t)
            self.buffers[name] = self.graph.get_attr(attr_name)
        return self.buffers[name]

    def lower(self) -> fx.GraphModule:
        g = self.model.graph
        for node in g:
            self.lower_node(node)
        outs = []
        for v in g.outputs:
            out = self.value(v)
            if out.op in ("get_attr", "placeholder") and v.name in self.consts:
                out = self.graph.call_method("clone", (out,))  # never hand out a weight itself
            if self.cast_outputs and v.dtype is not None and v.dtype.is_floating_point():
                # autocast computes in 16 bits inside; outputs keep the graph's dtype
                out = self.graph.call_method("to", (out, torch_dtype(v.dtype)))
            outs.append(out)
        self.graph.output(tuple(outs))
        gm = fx.GraphModule(self.root, self.graph)
        gm.eval()
        return gm

    def converter_for(self, node: ir.Node) -> tuple[Callable, Callable | None]:
        """The converter of ``node`` and its check (a training lowering overrides some)."""
        key = ("" if node.domain == "ai.onnx" else node.domain, node.op_type)
        if key not in CONVERTERS:
            raise BackendError(f"torch backend has no converter for {node.op_type} "
                               f"(node {node.name!r})")
        return CONVERTERS[key]

    def lower_node(self, node: ir.Node) -> None:
        fn, check = self.converter_for(node)
        if check is not None and (why := check(node)):
            raise BackendError(f"node {node.name!r} ({node.op_type}): {why}")
        view = NodeView(self, node)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            self.consts[node.outputs[0].name] = fn(view)
            return
        result = fn(view)
        if isinstance(result, (list, tuple)):
            for i, (v, r) in enumerate(zip(node.outputs, result)):
                if v.name and r is not None:
                    self.env[v.name] = r
            return
        if len(node.outputs) == 1:
            self.env[node.outputs[0].name] = result
        else:  # a tuple-returning torch call: pick each used output
            for i, v in enumerate(node.outputs):
                if v.name:
                    self.env[v.name] = self.graph.call_function(operator.getitem, (result, i))
