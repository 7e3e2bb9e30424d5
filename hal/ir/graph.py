"""Small helpers for reading and editing an onnx_ir graph (used by passes and backends)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def const(v: ir.Value | None) -> np.ndarray | None:
    """The value's array if it is a constant the user cannot override at run time."""
    if v is None or v.const_value is None or v.is_graph_input():
        return None
    return v.const_value.numpy()


def optional_const(node: ir.Node, i: int) -> tuple[bool, np.ndarray | None]:
    """(ok, array) for optional input ``i``: ok is False when it is given but not constant."""
    v = node.inputs[i] if i < len(node.inputs) else None
    if v is None:
        return True, None
    a = const(v)
    return a is not None, a


def add_initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    """Register ``array`` as a new initializer named ``name`` (made unique) and return it."""
    base, n = name, 0
    while name in graph.initializers:
        n += 1
        name = f"{base}_{n}"
    array = np.ascontiguousarray(array) if np.ndim(array) else np.asarray(array)  # keep 0-d
    v = ir.Value(name=name, shape=ir.Shape(array.shape),
                 type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                 const_value=ir.tensor(array, name=name))
    graph.register_initializer(v)
    return v


def set_input(node: ir.Node, i: int, value: ir.Value) -> None:
    if len(node.inputs) <= i:
        node.resize_inputs(i + 1)
    node.replace_input_with(i, value)


def sole_consumer(v: ir.Value) -> ir.Node | None:
    """The one node reading ``v``, or None if several do or ``v`` is a graph output."""
    users = v.consumers()
    if len(users) != 1 or v.is_graph_output() or len(v.uses()) != 1:
        return None
    return users[0]


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Make ``new`` take ``old``'s place, its name (graph outputs keep theirs) and type."""
    name = old.name
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    old.name = None
    new.name = name
    if old.type is not None:
        new.type = old.type
    if old.shape is not None:
        new.shape = old.shape
